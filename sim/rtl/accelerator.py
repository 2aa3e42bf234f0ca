"""RtlAccelerator: the Accelerator protocol on the Verilator simulation of the generated RTL.

Two backends (:class:`SimBackend`) run the same Verilator model of the accelerator. The native one (the default,
shiftpu.sim.rtl.native) runs it in this process from a shared library that holds the clock, the AXI4-Lite master
and the memory in C++: images are copied in and out, no Python runs per cycle, and the library is loaded once for
every run. The cocotb one writes the memory images to files, runs the cocotb testbench
(shiftpu.sim.rtl.testbench) in the Verilator executable (a subprocess) and reads back the arena and the registers;
it is the reference, with cocotbext-axi's bus models. Both give the same bytes and cycles. Cycle counts are
measured by the accelerator's own CYCLES register; they depend on the memory model (:class:`SimMemory`): the
compiled RAM answers faster than cocotbext-axi's AxiRam.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass
from enum import Enum
from pathlib import Path

import numpy as np

from shiftpu.arch.config import AccelConfig
from shiftpu.arch.regmap import ErrorCode, Status
from shiftpu.errors import ShiftpuError
from shiftpu.sim.accelerator import AcceleratorError, RunStats
from shiftpu.sim.golden import GoldenAccelerator
from shiftpu.sim.rtl.build import BuildProgress, RtlBuild, SimBackend, default_build_root, ensure_built
from shiftpu.sim.rtl.native import NativeBuildOptions
from shiftpu.sim.rtl.sim_ram import BASE_READ_LATENCY, RAM_BYTES, read_image, write_image
from shiftpu.toolchain import verilator_env

#: Placement of the segments in the simulated DDR.
SEGMENT_ALIGN = 1 << 16


class SimMemory(Enum):
    """Which model serves the accelerator's AXI4 master in the simulation."""

    AXI_RAM = "axiram"  #: cocotbext-axi AxiRam (the reference of the system tests; its timing in C++ natively)
    COMPILED = "compiled"  #: the RAM of shiftpu.sim.rtl.sim_ram (in the simulation top under cocotb, C++ natively)


class RtlSimError(ShiftpuError):
    """The RTL simulation did not complete (timeout or simulator failure)."""


class RtlTimeout(RtlSimError):
    """A run took longer than its wall-clock limit; the simulation stopped itself. Carries the registers read then."""

    def __init__(self, seconds: float, registers: dict[str, int]):
        self.registers = registers
        dump = ", ".join(f"{k}=0x{registers[k]:x}" for k in ("STATUS", "ERROR_CODE", "PC", "CYCLES_LO"))
        super().__init__(f"the RTL simulation did not finish within {seconds:g} s (wall clock) and was stopped "
                         f"({dump})")


@dataclass
class RtlRun:
    """Measured figures of the last simulation run."""

    cycles: int
    wall_seconds: float

    @property
    def cycles_per_second(self) -> float:
        return self.cycles / self.wall_seconds if self.wall_seconds > 0 else 0.0


def _align(n: int, a: int = SEGMENT_ALIGN) -> int:
    return -(-n // a) * a


class RtlAccelerator:
    """Runs programs on the Verilator model of the accelerator generated from ``config``."""

    name = "rtl"

    def __init__(self, config: AccelConfig, build_root: Path | None = None, max_cycles: int = 50_000_000,
                 memory: SimMemory = SimMemory.AXI_RAM, extra_read_latency: int = 0,
                 build_progress: BuildProgress | None = None, wall_timeout_s: float | None = None,
                 backend: SimBackend | str = SimBackend.NATIVE, native_options: NativeBuildOptions | None = None):
        """``build_root``: the folder where Verilator builds are cached (default: the user's cache directory, see
        shiftpu.sim.rtl.build). ``extra_read_latency``: cycles the compiled RAM adds to every read burst (a board's
        DDR latency; it then accepts several read addresses ahead, see shiftpu.sim.rtl.sim_ram). Only with
        ``SimMemory.COMPILED``. ``build_progress``: told when a build starts and ends (default: printed on stderr).
        ``wall_timeout_s``: seconds of wall-clock time one run may take (the build not counted); the simulation then
        stops itself and the run raises :class:`RtlTimeout` (default: no limit but ``max_cycles``). ``backend``:
        native (in this process, the default) or cocotb (the reference, for bus-model checks); ``native_options``: how
        the native library is compiled (default: shiftpu.sim.rtl.native.NativeBuildOptions())."""
        if wall_timeout_s is not None and not wall_timeout_s > 0:
            raise ValueError(f"wall_timeout_s must be more than 0 seconds, got {wall_timeout_s}")
        self.wall_timeout_s = wall_timeout_s
        self.config = config
        self.backend = SimBackend(backend)
        self.native_options = native_options
        self.memory = SimMemory(memory)
        if extra_read_latency < 0 or int(extra_read_latency) != extra_read_latency:
            raise ValueError(f"extra_read_latency must be a whole number of cycles >= 0, got {extra_read_latency}")
        if extra_read_latency and self.memory is not SimMemory.COMPILED:
            raise ValueError("extra_read_latency needs the compiled RAM (memory=SimMemory.COMPILED)")
        self.extra_read_latency = int(extra_read_latency)
        self.build_root = default_build_root() if build_root is None else Path(build_root)
        self.build_progress = build_progress
        self.max_cycles = max_cycles
        self.last_run: RtlRun | None = None
        self._build: RtlBuild | None = None

    @classmethod
    def with_read_latency(cls, config: AccelConfig, cycles: int, **kwargs) -> RtlAccelerator:
        """On the compiled RAM, reads answered ``cycles`` after their command as the performance model counts it
        (a board's DDR latency in cycles; never less than the RAM's own ``BASE_READ_LATENCY``)."""
        return cls(config, memory=SimMemory.COMPILED, extra_read_latency=max(0, cycles - BASE_READ_LATENCY), **kwargs)

    @property
    def read_latency(self) -> int | None:
        """The compiled RAM's read latency as the performance model counts it; None for AxiRam (the model's
        default read latency is calibrated on it)."""
        return BASE_READ_LATENCY + self.extra_read_latency if self.memory is SimMemory.COMPILED else None

    @property
    def build(self) -> RtlBuild:
        if self._build is None:
            self._build = ensure_built(self.config, self.build_root, self.build_progress, self.backend,
                                       self.native_options)
        return self._build

    def run_program(self, const: np.ndarray, act: np.ndarray) -> RunStats:
        const = np.ascontiguousarray(const, dtype=np.uint8)
        if act.dtype != np.uint8 or act.ndim != 1:
            raise TypeError("the activation arena must be a 1-D uint8 array")
        GoldenAccelerator(self.config).check_weight_codes(const)  # the RTL would read an illegal code as a weight
        result = self.run_raw(const, act)
        cycles = result["CYCLES_LO"] | result["CYCLES_HI"] << 32
        self.last_run = RtlRun(cycles, result["wall_seconds"])
        if result.get("wall_timeout"):
            raise RtlTimeout(self.wall_timeout_s or 0.0, {k: v for k, v in result.items() if k.isupper()})
        if result["timeout"]:
            raise RtlSimError(f"the accelerator did not finish within {self.max_cycles} cycles")
        if result["axi_protocol_errors"]:
            raise RtlSimError(f"{result['axi_protocol_errors']} AXI4 protocol violations on m_axi")
        if result["STATUS"] >> Status.ERROR & 1:
            raise AcceleratorError(ErrorCode(result["ERROR_CODE"]), result["PC"], "reported by the RTL")
        return RunStats(
            backend=self.name, instructions=result["INSTR_RETIRED"], cycles=cycles,
            stall_cycles=result["STALL_LO"] | result["STALL_HI"] << 32,
            read_beats=result["RD_BEATS"], write_beats=result["WR_BEATS"],
        )

    def _memory_for(self, act_base: int, act: np.ndarray) -> SimMemory:
        """The memory model of a run: AxiRam where the program does not fit the compiled RAM."""
        if self.memory is SimMemory.COMPILED and act_base + act.size > RAM_BYTES:
            if self.extra_read_latency:
                raise RtlSimError(f"the program needs {act_base + act.size} bytes of memory: more than the "
                                  f"compiled RAM's {RAM_BYTES}, and only that RAM models a read latency")
            return SimMemory.AXI_RAM
        return self.memory

    def run_raw(self, const: np.ndarray, act: np.ndarray) -> dict:
        """Run and return the testbench's record (registers, timeout flag, wall time); updates ``act``."""
        if self.backend is SimBackend.NATIVE:
            return self._run_native(const, act)
        return self._run_cocotb(const, act)

    def _run_native(self, const: np.ndarray, act: np.ndarray) -> dict:
        from shiftpu.sim.rtl.native import NativeSimulation

        build = self.build
        act_base = _align(max(const.size, 1))
        memory = self._memory_for(act_base, act)
        return NativeSimulation(build.library, self.config).run(
            const, act, act_base, compiled_ram=memory is SimMemory.COMPILED,
            mem_size=_align(act_base + act.size) + SEGMENT_ALIGN, read_latency=self.extra_read_latency,
            max_cycles=self.max_cycles, wall_timeout_s=self.wall_timeout_s)

    def _run_cocotb(self, const: np.ndarray, act: np.ndarray) -> dict:
        from cocotb_tools.runner import get_runner

        from shiftpu.sim.rtl.harness import TB_TOP

        build = self.build
        runs = build.directory / "runs"
        runs.mkdir(exist_ok=True)
        with tempfile.TemporaryDirectory(dir=runs) as tmp:
            work = Path(tmp)
            act_base = _align(max(const.size, 1))
            memory = self._memory_for(act_base, act)
            job = {
                "const": str(work / "const.bin"), "act": str(work / "act.bin"), "act_out": str(work / "act_out.bin"),
                "result": str(work / "result.json"), "const_base": 0, "act_base": act_base, "act_bytes": act.size,
                "mem_size": _align(act_base + act.size) + SEGMENT_ALIGN, "max_cycles": self.max_cycles,
                "wall_timeout_s": self.wall_timeout_s,
                "memory": memory.value,
            }
            plusargs = []
            if memory is SimMemory.COMPILED:
                nb = self.config.axi_bytes
                write_image(work / "mem_in.hex", [(0, const), (act_base, act)], self.config)
                plusargs = [f"+SHIFTPU_MEM_IN={work / 'mem_in.hex'}", f"+SHIFTPU_MEM_OUT={work / 'mem_out.hex'}",
                            f"+SHIFTPU_MEM_LO={act_base // nb}", f"+SHIFTPU_MEM_HI={(act_base + act.size - 1) // nb}",
                            f"+SHIFTPU_MEM_RLAT={self.extra_read_latency}"]
            else:
                (work / "const.bin").write_bytes(const.tobytes())
                (work / "act.bin").write_bytes(act.tobytes())
            (work / "job.json").write_text(json.dumps(job))
            os.environ.update(verilator_env())
            runner = get_runner("verilator")
            try:
                runner.test(hdl_toplevel=TB_TOP, hdl_toplevel_lang="verilog", test_module="shiftpu.sim.rtl.testbench", build_dir=build.directory,
                            test_dir=work, extra_env={"SHIFTPU_RTL_JOB": str(work / "job.json")}, plusargs=plusargs,
                            log_file=work / "sim.log")
            except SystemExit:
                pass
            if not (work / "result.json").exists():
                log = (work / "sim.log").read_text() if (work / "sim.log").exists() else ""
                tail = "\n".join(log.strip().splitlines()[-15:])
                raise RtlSimError(f"the RTL simulation failed:\n{tail}")
            result = json.loads((work / "result.json").read_text())
            if memory is SimMemory.COMPILED:
                act[:] = read_image(work / "mem_out.hex", act.size, self.config)
            else:
                act[:] = np.frombuffer((work / "act_out.bin").read_bytes(), dtype=np.uint8)
        return result
