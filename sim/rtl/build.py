"""Verilator builds of the generated accelerator, cached per config, generator sources and backend under a build folder.

Two backends (:class:`SimBackend`): the native one (shiftpu.sim.rtl.native: the top of shiftpu.sim.rtl.bridge
compiled with its C++ clock, AXI4-Lite master and memory into a shared library) and the cocotb one (the harness
of shiftpu.sim.rtl.harness, with the compiled RAM, built into an executable that cocotb drives).
The default folder is the user's cache directory (:func:`default_build_root`, from platformdirs), never the
current folder; callers may give another. Each build lives in ``<config hash>-<fingerprint>/``, the fingerprint
hashing the config and every generator source, so checkouts with different sources never overwrite each
other's executable. Concurrent processes building the same one wait on a file lock. A build takes minutes, so
it says when it starts and how long it took (on stderr, through rich, unless given another ``progress``).
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING

from shiftpu.arch.config import AccelConfig
from shiftpu.toolchain import ToolchainError, verilator_env

if TYPE_CHECKING:
    from shiftpu.sim.rtl.native import NativeBuildOptions

#: Told what a build is doing: a line when it starts, one when it is done.
BuildProgress = Callable[[str], None]
#: Verilator options: Amaranth's output trips width lint warnings that are not errors.
VERILATOR_ARGS = ("-Wno-fatal", "-Wno-WIDTHEXPAND", "-Wno-WIDTHTRUNC", "-Wno-UNUSEDSIGNAL", "-Wno-CMPCONST")


class SimBackend(Enum):
    """How the RTL simulation runs."""

    NATIVE = "native"  #: in this process: the clock, AXI4-Lite master and memory in C++, no Python per cycle
    COCOTB = "cocotb"  #: a Verilator executable driven by cocotb (cocotbext-axi's AxiRam; the reference)


@dataclass(frozen=True)
class RtlBuild:
    """A built Verilator model of one config."""

    config: AccelConfig
    directory: Path
    verilog: Path
    build_seconds: float  #: measured wall time of the build that produced it (0 if it was reused)
    reused: bool
    backend: SimBackend = SimBackend.COCOTB

    @property
    def library(self) -> Path:
        """The shared library of a native build."""
        from shiftpu.sim.rtl.native import LIBRARY

        return self.directory / LIBRARY


def generator_fingerprint(cfg: AccelConfig, backend: SimBackend = SimBackend.NATIVE,
                          native_options: NativeBuildOptions | None = None) -> str:
    """Hash of the config, every generator source file and the backend's own sources and build options
    (``native_options``, default :class:`NativeBuildOptions`'s): a build is valid while this is unchanged."""
    import amaranth

    import shiftpu.hw
    import shiftpu.sim.rtl.harness as harness
    import shiftpu.sim.rtl.protocol as protocol
    import shiftpu.sim.rtl.sim_ram as sim_ram

    h = hashlib.sha256(cfg.canonical_json().encode())
    for module in (harness, protocol, sim_ram):
        h.update(Path(module.__file__).read_bytes())
    h.update(amaranth.__version__.encode())
    for path in sorted(Path(shiftpu.hw.__file__).parent.glob("*.py")):
        h.update(path.name.encode())
        h.update(path.read_bytes())
    if SimBackend(backend) is SimBackend.NATIVE:
        import shiftpu.sim.rtl.bridge as bridge
        from shiftpu.sim.rtl import native

        h.update(b"native")
        for path in (Path(bridge.__file__), native.CPP_SOURCE):
            h.update(path.read_bytes())
        h.update(json.dumps((native_options or native.NativeBuildOptions()).to_dict(), sort_keys=True).encode())
    return h.hexdigest()[:16]


def default_build_root() -> Path:
    """Where RTL builds are cached unless a caller says otherwise: ``rtl/`` in the user's cache directory
    (``~/.cache/shiftpu/rtl`` on Linux)."""
    from platformdirs import user_cache_dir

    return Path(user_cache_dir("shiftpu")) / "rtl"


def build_directory(cfg: AccelConfig, root: Path | None = None, fingerprint: str | None = None,
                    backend: SimBackend = SimBackend.NATIVE, native_options: NativeBuildOptions | None = None) -> Path:
    """The folder of the ``backend`` build of ``cfg`` from the generator sources as they are now (their
    ``fingerprint``, when the caller has it already)."""
    root = default_build_root() if root is None else Path(root)
    fingerprint = fingerprint or generator_fingerprint(cfg, backend, native_options)
    return root.resolve() / f"{cfg.config_hash():08x}-{fingerprint}"


def _print_progress(line: str) -> None:
    from rich.console import Console

    Console(stderr=True, highlight=False).print(line, markup=False, soft_wrap=True)


def ensure_built(cfg: AccelConfig, root: Path | None = None, progress: BuildProgress | None = None,
                 backend: SimBackend = SimBackend.NATIVE, native_options: NativeBuildOptions | None = None) -> RtlBuild:
    """Generate the Verilog of ``cfg`` and build it with Verilator for ``backend``, unless an up-to-date build
    exists.

    ``root``: the cache folder (default :func:`default_build_root`); ``progress``: told when a build starts and
    when it is done (default: printed on stderr); ``native_options``: how a native build is compiled (default
    :class:`NativeBuildOptions`'s). A reused build says nothing."""
    from shiftpu.hw.emit import write_verilog
    from shiftpu.hw.top import TOP_NAME
    from shiftpu.sim.rtl import bridge, harness
    from shiftpu.sim.rtl.native import LIBRARY

    backend = SimBackend(backend)
    native = backend is SimBackend.NATIVE
    say = _print_progress if progress is None else progress
    if not native:
        native_options = None
    fingerprint = generator_fingerprint(cfg, backend, native_options)
    directory = build_directory(cfg, root, fingerprint, backend)
    directory.mkdir(parents=True, exist_ok=True)
    stamp = directory / "build.json"
    verilog_path = directory / f"{TOP_NAME}.v"
    top = bridge.NATIVE_TOP if native else harness.TB_TOP
    tb_path = directory / f"{top}.sv"
    product = directory / (LIBRARY if native else top)
    with open(directory / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if stamp.exists():
            info = json.loads(stamp.read_text())
            if info.get("fingerprint") == fingerprint and product.exists():
                return RtlBuild(cfg, directory, verilog_path, 0.0, True, backend)
        say(f"building the RTL simulation of accelerator 0x{cfg.config_hash():08x} ({cfg.array_shape} PEs) "
            f"with Verilator in {directory}: generating Verilog, then compiling (1-4 min; cached afterwards)")
        t0 = time.perf_counter()
        write_verilog(cfg, verilog_path)
        tb_path.write_text(bridge.native_verilog(cfg) if native else harness.harness_verilog(cfg))
        t_gen = time.perf_counter() - t0
        say(f"Verilog generated in {t_gen:.1f} s; compiling it with Verilator (log: {directory / 'build.log'})")
        if native:
            _build_native([verilog_path, tb_path], directory, top, native_options)
        else:
            _verilate([verilog_path, tb_path], directory, top)
        seconds = time.perf_counter() - t0
        stamp.write_text(json.dumps({"fingerprint": fingerprint, "backend": backend.value, "config": cfg.to_dict(),
                                     "generate_seconds": round(t_gen, 2), "build_seconds": round(seconds, 2)},
                                    indent=2))
        say(f"RTL simulation built in {seconds:.0f} s (measured)")
        return RtlBuild(cfg, directory, verilog_path, seconds, False, backend)


def _verilate(sources: list[Path], directory: Path, top: str) -> None:
    import os

    from cocotb_tools.runner import get_runner

    os.environ.update(verilator_env())
    runner = get_runner("verilator")
    try:
        runner.build(sources=sources, hdl_toplevel=top, build_dir=directory, build_args=list(VERILATOR_ARGS),
                     always=True, log_file=directory / "build.log")
    except (SystemExit, Exception) as e:  # the runner exits on a failed build
        raise ToolchainError(f"Verilator build failed, see {directory / 'build.log'}: {e}") from None


def _build_native(sources: list[Path], directory: Path, top: str, options: NativeBuildOptions | None) -> None:
    from shiftpu.sim.rtl.native import NativeBuildOptions, build_library

    build_library(sources, directory, top, directory / "build.log", options or NativeBuildOptions())
