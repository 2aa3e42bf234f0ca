"""shiftpu.sim.rtl: Verilator simulation of the generated accelerator, native (C++ harness) or driven by cocotb."""

from shiftpu.sim.rtl.accelerator import RtlAccelerator, RtlSimError, RtlTimeout, SimMemory
from shiftpu.sim.rtl.build import SimBackend

__all__ = ["RtlAccelerator", "RtlSimError", "RtlTimeout", "SimBackend", "SimMemory"]
