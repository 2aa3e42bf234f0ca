"""The native RTL simulation: the Verilator model, the clock, the AXI4-Lite master and the memory in one library.

:func:`build_library` verilates the native top of shiftpu.sim.rtl.bridge and compiles it with
``native_sim.cpp`` into a shared library; :class:`NativeSimulation` loads it with ctypes (once per process)
and runs programs on it as the cocotb testbench (shiftpu.sim.rtl.testbench) does: reset, CONST_BASE,
ACT_BASE, IRQ_ENABLE and CTRL.START over AXI4-Lite, the clock run in C++ until the interrupt, the registers
read, the interrupt acknowledged. Images go into and out of the simulated memory by copying, not through files.

The memory answers with either timing of the cocotb path, cycle for cycle: cocotbext-axi's AxiRam as cocotb
runs it, or the compiled RAM of shiftpu.sim.rtl.sim_ram (with its read latency). The cocotb path stays the
reference: tests/test_rtl_native.py holds the two to the same cycles and bytes.
"""

from __future__ import annotations

import ctypes
import os
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from shiftpu.arch.config import AccelConfig
from shiftpu.arch.regmap import OFFSET, Ctrl, Irq, Status
from shiftpu.errors import ShiftpuError
from shiftpu.sim.rtl.sim_ram import RAM_BYTES
from shiftpu.toolchain import ToolchainError, verilator_env

#: The C++ half of the simulation (clock, AXI4-Lite master, memories).
CPP_SOURCE = Path(__file__).with_name("native_sim.cpp")
#: The library a build leaves in its folder.
LIBRARY = "libshiftpu_native.so"
#: Verilator's prefix for the model's C++ classes (native_sim.cpp includes its headers).
PREFIX = "Vshiftpu_native"


@dataclass(frozen=True)
class NativeBuildOptions:
    """How the native library is compiled: part of its build's fingerprint. The defaults are the measured best
    trade of build time against speed on the board configs (bench/results/rtl_speed.md)."""

    opt_fast: str = "-O2"  #: C++ optimisation of the model's per-cycle code
    opt_slow: str = "-O1"  #: of its set-up code (run once per model)
    opt_global: str = "-O2"  #: of Verilator's runtime and of native_sim.cpp
    threads: int = 1  #: Verilator threads of the model (1: single-threaded)

    def to_dict(self) -> dict:
        return {"opt_fast": self.opt_fast, "opt_slow": self.opt_slow, "opt_global": self.opt_global,
                "threads": self.threads, "verilator": list(VERILATOR_ARGS), "cflags": CFLAGS, "ldflags": LDFLAGS}


#: Verilator options besides the sources and the top (lint warnings Amaranth's output trips are not errors).
VERILATOR_ARGS = ("--no-timing", "-Wno-fatal", "-Wno-WIDTHEXPAND", "-Wno-WIDTHTRUNC", "-Wno-UNUSEDSIGNAL",
                  "-Wno-CMPCONST")
#: Compiler and linker flags: position-independent code for a shared library whose own symbols bind to itself (so
#: that the libraries of several configs can be loaded in one process), and Verilator's fatal errors as exceptions.
CFLAGS = "-fPIC -DVL_USER_FATAL"
LDFLAGS = "-shared -Wl,-Bsymbolic -Wl,--no-undefined"
#: Cycles the reset is held at the start of a run, and idle cycles after it and after the acknowledgement
#: (as in the cocotb testbench).
RESET_CYCLES, SETTLE_CYCLES = 4, 2
#: An AXI4-Lite access that takes longer than this many cycles is a fault of the model.
REGISTER_ACCESS_LIMIT = 1000
#: Registers read at the end of every run.
RESULT_REGISTERS = ("STATUS", "ERROR_CODE", "PC", "INSTR_RETIRED", "CYCLES_LO", "CYCLES_HI", "STALL_LO", "STALL_HI",
                    "RD_BEATS", "WR_BEATS", "IRQ_STATUS", "CONFIG_HASH", "ISA_VERSION", "IP_ID")
#: With a wall-clock limit, the cycles run between two looks at the clock (as in the cocotb testbench);
#: without one, the cycles per call into the library (Python handles signals between calls).
WALL_CHECK_CYCLES = 20_000
RUN_CHUNK_CYCLES = 1_000_000
#: Memory models of the library (native_sim.cpp).
MEMORY_AXI_RAM, MEMORY_COMPILED = 0, 1


class NativeSimError(ShiftpuError):
    """The native simulation library failed (a fault of the model or of the harness)."""


def build_library(sources: list[Path], directory: Path, top: str, log: Path,
                  options: NativeBuildOptions = NativeBuildOptions()) -> Path:
    """Verilate ``sources`` (top module ``top``) and compile them with the C++ harness into
    ``directory/LIBRARY``; the tools' output goes to ``log``."""
    if not CPP_SOURCE.is_file():
        raise ToolchainError(f"{CPP_SOURCE} is missing from this installation of shiftpu: the native RTL simulation "
                             "cannot be built (the cocotb backend, backend='cocotb', does not need it)")
    env = verilator_env()
    env.pop("MAKEFLAGS", None)  # the make variables are given below, explicitly
    obj = directory / "native_obj"
    library = directory / LIBRARY
    threads = ["--threads", str(options.threads)] if options.threads > 1 else []
    verilate = ["verilator", "--cc", "--exe", "-Mdir", str(obj), "--top-module", top, "--prefix", PREFIX,
                "-o", str(library), *VERILATOR_ARGS, *threads, "-CFLAGS", CFLAGS, "-LDFLAGS", LDFLAGS,
                str(CPP_SOURCE), *map(str, sources)]
    jobs = str(max(1, min(2, os.cpu_count() or 1)))
    make = ["make", "-j", jobs, "-C", str(obj), "-f", f"{PREFIX}.mk", f"OPT_FAST={options.opt_fast}",
            f"OPT_SLOW={options.opt_slow}", f"OPT_GLOBAL={options.opt_global}",
            # the wheel's verilated.mk leaves the precompiled-header flag empty (docs: TOOLCHAIN)
            "CFG_CXXFLAGS_PCH_I=-include", f"PYTHON3={sys.executable}", "VM_PARALLEL_BUILDS=1"]
    with open(log, "w") as out:
        for cmd in (verilate, make):
            out.write("$ " + " ".join(cmd) + "\n")
            out.flush()
            done = subprocess.run(cmd, stdout=out, stderr=subprocess.STDOUT, env=env)
            if done.returncode:
                raise ToolchainError(f"the native RTL simulation build failed ({cmd[0]} exited {done.returncode}), "
                                     f"see {log}")
    return library


class _Library:
    """The loaded library of one build, with its C signatures; one simulation runs in it at a time."""

    def __init__(self, path: Path):
        lib = ctypes.CDLL(str(path), mode=os.RTLD_LOCAL)
        u64, u32, p = ctypes.c_ulonglong, ctypes.c_uint, ctypes.c_void_p
        i32, byte_p = ctypes.c_int, ctypes.POINTER(ctypes.c_uint8)
        sigs = {
            "shiftpu_open": (p, [i32, u64]),
            "shiftpu_last_error": (ctypes.c_char_p, []),
            "shiftpu_begin": (i32, [p, i32, u64, u32, i32]),
            "shiftpu_mem_write": (i32, [p, u64, byte_p, u64]), "shiftpu_mem_read": (i32, [p, u64, byte_p, u64]),
            "shiftpu_cycles": (i32, [p, u64]),
            "shiftpu_run_until_irq": (i32, [p, u64, ctypes.POINTER(u64), ctypes.POINTER(i32)]),
            "shiftpu_reg_write": (i32, [p, u32, u32, u64]),
            "shiftpu_reg_read": (i32, [p, u32, u64, ctypes.POINTER(u32)]),
            "shiftpu_outputs": (i32, [p, ctypes.POINTER(i32), ctypes.POINTER(u32)]),
        }
        for name, (res, args) in sigs.items():
            fn = getattr(lib, name)
            fn.restype, fn.argtypes = res, args
        self.lib = lib
        self.lock = threading.Lock()
        self._handle: int | None = None

    def handle(self, bus_bytes: int) -> int:
        """The library's simulation (its model, memory and bus models), opened on first use."""
        if self._handle is None:
            h = self.lib.shiftpu_open(bus_bytes, RAM_BYTES)
            if not h:
                raise NativeSimError(f"the native simulation did not open: {self.lib.shiftpu_last_error().decode()}")
            self._handle = h
        return self._handle


_LIBRARIES: dict[Path, _Library] = {}
_LOAD_LOCK = threading.Lock()


def _library(path: Path) -> _Library:
    path = Path(path).resolve()
    with _LOAD_LOCK:
        if path not in _LIBRARIES:
            _LIBRARIES[path] = _Library(path)
        return _LIBRARIES[path]


class NativeSimulation:
    """Runs programs on the native simulation library of one build (loaded once per process)."""

    def __init__(self, library: Path, config: AccelConfig):
        self.config = config
        self._lib = _library(library)

    def _check(self, status: int) -> None:
        if status:
            raise NativeSimError(f"the native RTL simulation failed: {self._lib.lib.shiftpu_last_error().decode()}")

    def run(self, const: np.ndarray, act: np.ndarray, act_base: int, compiled_ram: bool, mem_size: int,
            read_latency: int, max_cycles: int, wall_timeout_s: float | None) -> dict:
        """One program, as the cocotb testbench runs it: the same record (registers, timeouts, wall seconds,
        ``irq_after_ack``, ``busy``, ``axi_protocol_errors``); ``act`` receives the arena."""
        with self._lib.lock:
            return self._run(const, act, act_base, compiled_ram, mem_size, read_latency, max_cycles, wall_timeout_s)

    def _run(self, const, act, act_base, compiled_ram, mem_size, read_latency, max_cycles, wall_timeout_s) -> dict:
        lib, check = self._lib.lib, self._check
        h = self._lib.handle(self.config.axi_bytes)
        byte_p = ctypes.POINTER(ctypes.c_uint8)
        kind = MEMORY_COMPILED if compiled_ram else MEMORY_AXI_RAM
        check(lib.shiftpu_begin(h, kind, mem_size, read_latency, RESET_CYCLES))
        for base, image in ((0, const), (act_base, act)):
            data = np.ascontiguousarray(image, dtype=np.uint8)
            check(lib.shiftpu_mem_write(h, base, data.ctypes.data_as(byte_p), data.size))
        check(lib.shiftpu_cycles(h, SETTLE_CYCLES))

        def write(name: str, value: int) -> None:
            check(lib.shiftpu_reg_write(h, OFFSET[name], value, REGISTER_ACCESS_LIMIT))

        def read(name: str) -> int:
            value = ctypes.c_uint()
            check(lib.shiftpu_reg_read(h, OFFSET[name], REGISTER_ACCESS_LIMIT, ctypes.byref(value)))
            return value.value

        write("CONST_BASE", 0)
        write("ACT_BASE", act_base)
        write("IRQ_ENABLE", 1 << Irq.DONE)
        t0 = time.perf_counter()
        write("CTRL", 1 << Ctrl.START)
        chunk = RUN_CHUNK_CYCLES if wall_timeout_s is None else WALL_CHECK_CYCLES
        waited, irq, wall_timeout = 0, False, False
        ran, seen = ctypes.c_ulonglong(), ctypes.c_int()
        while waited < max_cycles:
            check(lib.shiftpu_run_until_irq(h, min(chunk, max_cycles - waited), ctypes.byref(ran), ctypes.byref(seen)))
            waited += ran.value
            if seen.value:
                irq = True
                break
            if wall_timeout_s is not None and time.perf_counter() - t0 > wall_timeout_s:
                wall_timeout = True
                break
        wall = time.perf_counter() - t0
        result: dict = {"timeout": not irq and not wall_timeout, "wall_timeout": wall_timeout, "wall_seconds": wall}
        for name in RESULT_REGISTERS:
            result[name] = read(name)
        write("IRQ_STATUS", 1 << Irq.DONE)
        check(lib.shiftpu_cycles(h, SETTLE_CYCLES))
        irq_now, errors = ctypes.c_int(), ctypes.c_uint()
        check(lib.shiftpu_outputs(h, ctypes.byref(irq_now), ctypes.byref(errors)))
        result["irq_after_ack"] = irq_now.value
        result["busy"] = bool(result["STATUS"] >> Status.BUSY & 1)
        result["axi_protocol_errors"] = errors.value
        out = np.empty(act.size, dtype=np.uint8)
        check(lib.shiftpu_mem_read(h, act_base, out.ctypes.data_as(byte_p), out.size))
        act[:] = out
        return result
