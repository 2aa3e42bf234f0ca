"""The clock every fps figure uses, decided in one place from the stored timing estimates.

An fps figure is cycles divided by a clock. The board clock (``AccelConfig.clock_mhz``, which the Vivado flow
asks the PS to make) is used only where a stored timing estimate of that very design clears it with the margin
of :data:`~shiftpu.boards.timing.CLOCK_MARGIN`. Where the stored estimate does not clear it, the figure uses the
highest whole-MHz clock that the estimated Fmax does clear with that margin. Where no estimate of the design is
stored, the board clock is used and labelled as assumed.

The store (``estimates/timing.json`` next to this module, shipped with the package) holds one record per timed
design. A record is keyed by the FPGA family and a *design key*: a digest of the config and of the generator's
sources (``shiftpu.hw``, ``shiftpu.arch`` and ``shiftpu.boards.rtl``), so that a record made before the RTL
changed no longer matches. The key is computed from the sources rather than from the Verilog because producing
the Verilog takes seconds (about 9 s for the Ultra96-V2 default config), too long for every ``shiftpu
estimate``. A second key over the analyser version, the delay model and the synthesis script makes a record from
an older analysis unusable too.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import asdict, dataclass
from enum import Enum
from functools import lru_cache
from importlib.util import find_spec
from pathlib import Path
from typing import Any

from shiftpu.arch.config import AccelConfig, ConfigError
from shiftpu.boards.board import Board, load_board
from shiftpu.boards.estimate import synth_script
from shiftpu.boards.timing import ANALYSIS_VERSION, CLOCK_MARGIN, MODEL_SOURCE, delay_model, netlist_commands
from shiftpu.errors import ShiftpuError

#: The shipped store of timing estimates that fps figures use.
STORE_PATH = Path(__file__).parent / "estimates" / "timing.json"
#: Format tag of the store.
STORE_FORMAT = "shiftpu-timing-store/1"
#: Packages whose sources make the accelerator's Verilog (the design key covers every ``*.py`` in them) and the
#: module that calls the generator.
GENERATOR_PACKAGES = ("shiftpu.hw", "shiftpu.arch")
GENERATOR_MODULES = ("shiftpu.boards.rtl",)
#: What the design key is, in the words stored with every record.
DESIGN_KEY_KIND = ("sha256 of the accelerator config and of the generator sources (shiftpu.hw, shiftpu.arch, "
                   "shiftpu.boards.rtl)")


class TimingStoreError(ShiftpuError):
    """The store of timing estimates is unreadable, or a report cannot be added to it."""


class ClockSource(str, Enum):
    """Where the clock of an fps figure comes from."""

    BOARD_CLOCK_MET = "board_clock_met"  #: the board clock, cleared by a stored estimate of this design
    ESTIMATED_FMAX = "estimated_fmax"  #: below the board clock: what the stored estimated Fmax clears
    ASSUMED = "assumed"  #: the board clock, with no stored timing estimate of this design

    @property
    def words(self) -> str:
        """The source in a few words (the clock's label says it in full)."""
        return {ClockSource.BOARD_CLOCK_MET: "board clock, timing estimated",
                ClockSource.ESTIMATED_FMAX: "from the estimated Fmax",
                ClockSource.ASSUMED: "assumed board clock, timing not estimated"}[self]


@dataclass(frozen=True)
class FpsClock:
    """The clock an fps figure uses, where it comes from, and the words that say so."""

    clock_mhz: float
    source: ClockSource
    board_clock_mhz: float  #: the clock the design is built for (``AccelConfig.clock_mhz``)
    fmax_mhz_estimated: float | None  #: from the stored estimate; None when there is none (or no path limits it)
    label: str  #: the source in words, e.g. "assumed board clock, timing not estimated (...)"

    def describe(self) -> str:
        """``200 MHz (assumed board clock, ...)``: the clock with its source, as figures print it."""
        return f"{self.clock_mhz:g} MHz ({self.label})"

    def to_json(self) -> dict[str, Any]:
        return {"clock_mhz": self.clock_mhz, "clock_source": self.source.value, "clock_label": self.label,
                "board_clock_mhz": self.board_clock_mhz, "fmax_mhz_estimated": self.fmax_mhz_estimated}


@dataclass(frozen=True)
class TimingRecord:
    """A stored timing estimate of one design (the parts of a ``TimingReport`` the clock decision and readers need)."""

    board: str  #: the board it was made for (the design is what counts: any board of the family may use it)
    family: str  #: Yosys family of the netlist (``xcup``, ``xc7``)
    config: AccelConfig
    design_key: str  #: :func:`design_key` of the config when the estimate was made
    analysis_key: str  #: :func:`analysis_key` of the family when the estimate was made
    fmax_mhz_estimated: float | None  #: None: no register-to-register path
    worst_delay_ns: float | None
    worst_path: dict[str, Any] | None  #: the path that sets the Fmax (``TimingPath.to_json``)
    delay_model: str  #: the delay model's name
    ports_set_fmax: bool
    synth_seconds: float | None  #: measured when the netlist was made

    def to_json(self) -> dict[str, Any]:
        return {"board": self.board, "family": self.family, "config_hash": f"0x{self.config.config_hash():08x}",
                "config": self.config.to_dict(), "design_key": self.design_key, "analysis_key": self.analysis_key,
                "fmax_mhz_estimated": self.fmax_mhz_estimated, "worst_delay_ns": self.worst_delay_ns,
                "worst_path": self.worst_path, "delay_model": self.delay_model, "ports_set_fmax": self.ports_set_fmax,
                "synth_seconds": self.synth_seconds}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> TimingRecord:
        fmax, worst = data["fmax_mhz_estimated"], data["worst_delay_ns"]
        return cls(board=str(data["board"]), family=str(data["family"]),
                   config=AccelConfig.from_dict(data["config"], source="timing record"),
                   design_key=str(data["design_key"]), analysis_key=str(data["analysis_key"]),
                   fmax_mhz_estimated=None if fmax is None else float(fmax),
                   worst_delay_ns=None if worst is None else float(worst), worst_path=data["worst_path"],
                   delay_model=str(data["delay_model"]), ports_set_fmax=bool(data["ports_set_fmax"]),
                   synth_seconds=data["synth_seconds"])


# ---------------------------------------------------------------------------------------------------- keys

def _package_dir(name: str) -> Path:
    spec = find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        raise TimingStoreError(f"cannot find the sources of {name}")
    return Path(next(iter(spec.submodule_search_locations)))


def _module_file(name: str) -> Path:
    spec = find_spec(name)
    if spec is None or spec.origin is None:
        raise TimingStoreError(f"cannot find the source of {name}")
    return Path(spec.origin)


@lru_cache(maxsize=1)
def generator_digest() -> str:
    """SHA-256 of the generator's sources: every ``*.py`` of :data:`GENERATOR_PACKAGES` (recursively) and the
    :data:`GENERATOR_MODULES`, each with its name."""
    files: list[tuple[str, Path]] = []
    for package in GENERATOR_PACKAGES:
        root = _package_dir(package)
        files += [(f"{package}/{p.relative_to(root).as_posix()}", p) for p in root.rglob("*.py")]
    files += [(module, _module_file(module)) for module in GENERATOR_MODULES]
    h = hashlib.sha256()
    for name, path in sorted(files):
        h.update(name.encode() + b"\0" + path.read_bytes() + b"\0")
    return h.hexdigest()


def design_key(cfg: AccelConfig) -> str:
    """Identity of the design a timing estimate is for: the config and the generator sources (16 hex digits)."""
    return hashlib.sha256((cfg.canonical_json() + generator_digest()).encode()).hexdigest()[:16]


def analysis_key(family: str) -> str:
    """Identity of the analysis: analyser version, the family's delay model and the synthesis script."""
    text = json.dumps([ANALYSIS_VERSION, asdict(delay_model(family)), synth_script(family), netlist_commands()])
    return hashlib.sha256(text.encode()).hexdigest()[:16]


# ---------------------------------------------------------------------------------------------- the decision

def _supported_clock(fmax_mhz: float) -> float:
    """The highest clock that ``fmax_mhz`` clears with the margin: whole MHz (whole kHz below 1 MHz)."""
    per_mhz = 1 if fmax_mhz >= CLOCK_MARGIN else 1000
    steps = math.floor(fmax_mhz * per_mhz / CLOCK_MARGIN)
    while steps > 0 and CLOCK_MARGIN * (steps / per_mhz) > fmax_mhz:  # floating-point rounding at an exact multiple
        steps -= 1
    return steps / per_mhz


def decide_clock(board_clock_mhz: float, record: TimingRecord | None, command: str, stale: bool = False) -> FpsClock:
    """The clock for a design built for ``board_clock_mhz`` whose stored estimate is ``record`` (None: none).

    ``command`` is the command that produces an estimate, named where there is none; ``stale`` says that a record
    for the same config exists but was made from other sources or by another analysis.
    """
    if record is None:
        why = ("the stored estimate is for other RTL or an older analysis" if stale else "timing not estimated")
        return FpsClock(board_clock_mhz, ClockSource.ASSUMED, board_clock_mhz, None,
                        f"assumed board clock, {why}: run `{command}`")
    fmax = record.fmax_mhz_estimated
    if fmax is None or fmax >= CLOCK_MARGIN * board_clock_mhz:
        cleared = ("no register-to-register path limits it" if fmax is None
                   else f"cleared by the estimated Fmax {fmax:g} MHz >= {CLOCK_MARGIN:g} x {board_clock_mhz:g} MHz")
        return FpsClock(board_clock_mhz, ClockSource.BOARD_CLOCK_MET, board_clock_mhz, fmax, f"board clock, {cleared}")
    clock = _supported_clock(fmax)
    return FpsClock(clock, ClockSource.ESTIMATED_FMAX, board_clock_mhz, fmax,
                    f"from the estimated Fmax {fmax:g} MHz / {CLOCK_MARGIN:g}: the {board_clock_mhz:g} MHz board clock "
                    f"is not expected to be met")


def estimate_command(board: Board, cfg: AccelConfig) -> str:
    """The command that estimates this design's timing and stores the result."""
    config = "" if cfg == board.accel else " --config <config.json>"
    return f"shiftpu build-hw --board {board.name}{config} --timing --no-ecp5 --record"


def fps_clock(board: Board | str, cfg: AccelConfig | None = None, store: Path | None = None) -> FpsClock:
    """The clock fps figures use for ``cfg`` (default: the board's config) on ``board``, from the stored estimates
    (``store``, default :data:`STORE_PATH`)."""
    b = load_board(board) if isinstance(board, str) else board
    cfg = b.accel if cfg is None else cfg
    records = load_store(store)
    family = b.yosys_family.value
    key, analysis = design_key(cfg), analysis_key(family)
    record = next((r for r in records if r.family == family and r.design_key == key and r.analysis_key == analysis),
                  None)
    stale = record is None and any(r.family == family and r.config == cfg for r in records)
    return decide_clock(cfg.clock_mhz, record, estimate_command(b, cfg), stale)


# ------------------------------------------------------------------------------------------------- the store

def load_store(path: Path | None = None) -> tuple[TimingRecord, ...]:
    """The records of a store (default :data:`STORE_PATH`; none when the file does not exist)."""
    path = STORE_PATH if path is None else path
    if not path.exists():
        return ()
    try:
        data = json.loads(path.read_text())
        if data.get("format") != STORE_FORMAT:
            raise TimingStoreError(f"{path}: not a {STORE_FORMAT} file (field 'format')")
        return tuple(TimingRecord.from_json(r) for r in data["designs"])
    except (OSError, json.JSONDecodeError, AttributeError, KeyError, TypeError, ValueError, ConfigError) as e:
        raise TimingStoreError(f"{path}: unreadable timing store ({type(e).__name__}: {e})") from None


def write_store(records: tuple[TimingRecord, ...] | list[TimingRecord], path: Path | None = None) -> None:
    """Write the records to a store (default :data:`STORE_PATH`), sorted by board and config hash."""
    path = STORE_PATH if path is None else path
    ordered = sorted(records, key=lambda r: (r.board, r.config.config_hash(), r.design_key))
    data = {"format": STORE_FORMAT, "kind": MODEL_SOURCE, "clock_margin": CLOCK_MARGIN,
            "design_key": DESIGN_KEY_KIND, "designs": [r.to_json() for r in ordered]}
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n")
    tmp.replace(path)


def report_identity(cfg: AccelConfig, family: str) -> dict[str, Any]:
    """Fields that tie a timing report to the design it was made for (added to ``build-hw --timing --json``)."""
    return {"config": cfg.to_dict(), "design_key": design_key(cfg), "analysis_key": analysis_key(family),
            "design_key_kind": DESIGN_KEY_KIND}


def record_from_report(report: dict[str, Any]) -> TimingRecord:
    """A record from the JSON of ``shiftpu build-hw --timing --json`` (a ``TimingReport`` with
    :func:`report_identity`); refused when it was made from other sources or by another analysis."""
    missing = [k for k in ("board", "family", "config", "design_key", "analysis_key", "fmax_mhz_estimated",
                           "worst_delay_ns", "paths", "port_paths", "delay_model", "ports_set_fmax") if k not in report]
    if missing:
        raise TimingStoreError(f"not a timing report of `shiftpu build-hw --timing --json`: no {', '.join(missing)}")
    if report["design_key"] is None:
        raise TimingStoreError("the report was made from a --verilog file: it cannot be tied to a design")
    try:
        cfg = AccelConfig.from_dict(report["config"], source="timing report")
        current = design_key(cfg)
        analysis = analysis_key(str(report["family"]))
    except ShiftpuError as e:
        raise TimingStoreError(str(e)) from None
    if report["design_key"] != current:
        raise TimingStoreError(f"the report is for design {report['design_key']}, but these sources make "
                               f"{current} for its config: the RTL changed since, estimate it again")
    if report["analysis_key"] != analysis:
        raise TimingStoreError("the report was made by another analyser version, delay model or synthesis "
                               "script: estimate it again")
    if report["board"] is None:
        raise TimingStoreError("the report names no board")
    candidates = list(report["paths"]) + (list(report["port_paths"]) if report["ports_set_fmax"] else [])
    worst = max(candidates, key=lambda p: p["delay_ns"], default=None)
    return TimingRecord(board=str(report["board"]), family=str(report["family"]), config=cfg,
                        design_key=current, analysis_key=analysis, fmax_mhz_estimated=report["fmax_mhz_estimated"],
                        worst_delay_ns=report["worst_delay_ns"], worst_path=worst,
                        delay_model=str(report["delay_model"]["name"]), ports_set_fmax=bool(report["ports_set_fmax"]),
                        synth_seconds=report.get("synth_seconds"))


def add_record(record: TimingRecord, path: Path | None = None) -> None:
    """Store ``record``, replacing any record of the same board and config (an older estimate of it) and any of
    the same design."""
    kept = [r for r in load_store(path)
            if not ((r.board == record.board and r.config == record.config)
                    or (r.family == record.family and r.design_key == record.design_key))]
    write_store([*kept, record], path)


def add_report(report: dict[str, Any], path: Path | None = None) -> TimingRecord:
    """Add the JSON of ``shiftpu build-hw --timing --json`` to the store; returns the record stored."""
    record = record_from_report(report)
    add_record(record, path)
    return record
