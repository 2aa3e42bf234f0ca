"""shiftpu.sim.rtl: Verilator co-simulation of the generated accelerator, driven by cocotb."""

from shiftpu.sim.rtl.accelerator import RtlAccelerator, RtlSimError, RtlTimeout, SimMemory

__all__ = ["RtlAccelerator", "RtlSimError", "RtlTimeout", "SimMemory"]
