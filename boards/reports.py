"""Parsers for Vivado's ``report_utilization`` and ``report_timing_summary`` text reports, into JSON.

Header-driven, so they read the Zynq-7000 ("Slice Logic") and UltraScale+ ("CLB Logic") layouts, with
or without the "Prohibited" column that newer Vivado versions add.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from shiftpu.errors import ShiftpuError

#: Utilisation rows (first match wins) that give each board resource.
UTILIZATION_ROWS: dict[str, tuple[str, ...]] = {
    "LUT": ("CLB LUTs", "Slice LUTs"),
    "FF": ("CLB Registers", "Slice Registers"),
    "DSP": ("DSPs",),
    "BRAM36": ("Block RAM Tile",),
    "URAM": ("URAM",),
}

_HEADER_FIELD = re.compile(r"^\|\s*([A-Za-z][A-Za-z ]*?)\s*:\s*(.*?)\s*$")
_TABLE_RULE = re.compile(r"^\+[-+]+\+\s*$")
_CLOCK_LINE = re.compile(r"^(\s*)(\S+)\s+\{([-\d.]+)\s+([-\d.]+)[^}]*\}\s+([\d.]+)\s+([\d.]+)")


class ReportError(ShiftpuError):
    """A Vivado report is missing or not in the expected format."""


@dataclass(frozen=True)
class SiteUse:
    """One row of a utilisation table."""

    used: float
    available: int | None  #: None where Vivado leaves the column empty

    @property
    def percent(self) -> float | None:
        if not self.available:
            return None
        return 100.0 * self.used / self.available


@dataclass(frozen=True)
class UtilizationReport:
    """The parts of report_utilization that the flow uses."""

    tool_version: str
    device: str
    design: str
    design_state: str
    sites: dict[str, SiteUse]  #: every "Site Type" row, by name (without footnote stars); first table wins

    def resource(self, kind: str) -> SiteUse:
        """LUT, FF, DSP, BRAM36 or URAM (a device without URAM reports 0 of 0)."""
        for row in UTILIZATION_ROWS[kind]:
            if row in self.sites:
                return self.sites[row]
        if kind == "URAM":
            return SiteUse(0.0, 0)
        raise ReportError(f"utilization report has no row for {kind} (looked for {', '.join(UTILIZATION_ROWS[kind])})")

    def to_json(self) -> dict[str, Any]:
        resources = {}
        for kind in UTILIZATION_ROWS:
            use = self.resource(kind)
            pct = use.percent
            resources[kind] = {"used": use.used, "available": use.available,
                               "percent": None if pct is None else round(pct, 2)}
        return {"tool_version": self.tool_version, "device": self.device, "design": self.design,
                "design_state": self.design_state, "resources": resources}


@dataclass(frozen=True)
class ClockTiming:
    """One clock of report_timing_summary, with its worst setup and hold slack."""

    name: str
    period_ns: float
    frequency_mhz: float
    wns_ns: float | None  #: worst setup slack (None: no paths on this clock)
    whs_ns: float | None  #: worst hold slack

    @property
    def fmax_mhz(self) -> float | None:
        """Frequency at which the worst setup path would have zero slack (estimated: 1 / (period - WNS))."""
        if self.wns_ns is None:
            return None
        return 1000.0 / (self.period_ns - self.wns_ns)


@dataclass(frozen=True)
class TimingReport:
    """The Design Timing Summary, the verdict and the clocks of report_timing_summary."""

    tool_version: str
    device: str
    design: str
    summary: dict[str, float]  #: column -> value ("WNS(ns)", "TNS Failing Endpoints", ...)
    met: bool  #: Vivado's own verdict: "All user specified timing constraints are met."
    clocks: tuple[ClockTiming, ...]

    @property
    def wns_ns(self) -> float:
        return self.summary["WNS(ns)"]

    @property
    def whs_ns(self) -> float:
        return self.summary["WHS(ns)"]

    def to_json(self) -> dict[str, Any]:
        return {
            "tool_version": self.tool_version, "device": self.device, "design": self.design, "met": self.met,
            "wns_ns": self.wns_ns, "tns_ns": self.summary.get("TNS(ns)"), "whs_ns": self.whs_ns,
            "ths_ns": self.summary.get("THS(ns)"),
            "failing_setup_endpoints": int(self.summary.get("TNS Failing Endpoints", 0)),
            "failing_hold_endpoints": int(self.summary.get("THS Failing Endpoints", 0)),
            "clocks": [{**asdict(c), "fmax_mhz": None if c.fmax_mhz is None else round(c.fmax_mhz, 1)}
                       for c in self.clocks],
        }


def _number(text: str) -> float:
    return float(text.replace(",", ""))


def _optional_number(text: str | None) -> float | None:
    """A timing value, or None where Vivado writes "NA" (no paths of that kind were timed)."""
    if text is None or text == "NA":
        return None
    return _number(text)


def _header(lines: list[str]) -> dict[str, str]:
    fields: dict[str, str] = {}
    for line in lines[:20]:
        m = _HEADER_FIELD.match(line)
        if m:
            fields.setdefault(m.group(1), m.group(2))
    return fields


def _cells(line: str) -> list[str]:
    return [c.strip() for c in line.strip().strip("|").split("|")]


def _site_tables(lines: list[str]) -> dict[str, SiteUse]:
    """Rows of every "+---+ / | Site Type | Used | ... |" table."""
    sites: dict[str, SiteUse] = {}
    i = 0
    while i < len(lines) - 2:
        if not (_TABLE_RULE.match(lines[i]) and lines[i + 1].startswith("|") and _TABLE_RULE.match(lines[i + 2])):
            i += 1
            continue
        header = _cells(lines[i + 1])
        i += 3
        if "Site Type" not in header or "Used" not in header:
            continue
        col_used = header.index("Used")
        col_avail = header.index("Available") if "Available" in header else None
        while i < len(lines) and lines[i].startswith("|"):
            cells = _cells(lines[i])
            i += 1
            if len(cells) != len(header):
                continue
            name = cells[0].rstrip("*").strip()
            try:
                used = _number(cells[col_used])
            except ValueError:
                continue
            avail_text = cells[col_avail] if col_avail is not None else ""
            available = int(_number(avail_text)) if avail_text else None
            sites.setdefault(name, SiteUse(used, available))
    return sites


def _read(path: Path) -> list[str]:
    try:
        return path.read_text(errors="replace").splitlines()
    except OSError as e:
        raise ReportError(f"{path}: cannot read report: {e}") from None


def parse_utilization(path: str | Path) -> UtilizationReport:
    """Parse a ``report_utilization`` text report."""
    path = Path(path)
    lines = _read(path)
    header = _header(lines)
    sites = _site_tables(lines)
    if not sites:
        raise ReportError(f"{path}: no 'Site Type' tables: not a Vivado utilization report")
    report = UtilizationReport(tool_version=header.get("Tool Version", ""), device=header.get("Device", ""),
                               design=header.get("Design", ""), design_state=header.get("Design State", ""),
                               sites=sites)
    for kind in UTILIZATION_ROWS:
        report.resource(kind)  # raises ReportError naming the missing row
    return report


def _section(lines: list[str], title: str) -> list[str]:
    """Lines of a "| Title" section of report_timing_summary, up to the next section."""
    for i, line in enumerate(lines):
        if line.strip() == f"| {title}":
            body = []
            for rest in lines[i + 3:]:
                if rest.startswith("| ") and not rest.startswith("| -"):
                    break
                body.append(rest)
            while body and set(body[-1].strip()) <= {"-"}:
                body.pop()
            return body
    return []


def _columns(header_line: str) -> list[str]:
    return [c for c in re.split(r"\s{2,}", header_line.strip()) if c]


def _value_table(body: list[str], first_column: str | None) -> list[dict[str, str]]:
    """Rows of a whitespace-aligned table whose header line holds "WNS(ns)"."""
    for i, line in enumerate(body):
        if "WNS(ns)" in line:
            names = _columns(line)
            rows = []
            for row in body[i + 2:]:
                if not row.strip():
                    if rows:
                        break
                    continue
                values = row.split()
                if len(values) != len(names):
                    continue
                rows.append(dict(zip(names, values, strict=True)))
            if first_column is not None and names and names[0] != first_column:
                return []
            return rows
    return []


def parse_timing_summary(path: str | Path) -> TimingReport:
    """Parse a ``report_timing_summary`` text report."""
    path = Path(path)
    lines = _read(path)
    header = _header(lines)
    summary_rows = _value_table(_section(lines, "Design Timing Summary"), None)
    if not summary_rows:
        raise ReportError(f"{path}: no Design Timing Summary: not a Vivado timing summary report")
    values = summary_rows[0]
    try:
        # "NA": Vivado timed no paths of that kind; such columns are left out of the summary
        summary = {k: _number(v) for k, v in values.items() if v != "NA"}
    except ValueError as e:
        raise ReportError(f"{path}: unreadable Design Timing Summary value: {e}") from None
    text = "\n".join(lines)
    for key, kind in (("WNS(ns)", "setup"), ("WHS(ns)", "hold")):
        if key not in values:
            raise ReportError(f"{path}: Design Timing Summary has no {key} column")
        if key not in summary:
            why = (" (the report says there are no user specified timing constraints)"
                   if "There are no user specified timing constraints." in text else "")
            raise ReportError(f"{path}: Design Timing Summary gives {key} as NA: Vivado timed no {kind} "
                              f"paths, so there is no {kind} slack to report{why}")
    if "All user specified timing constraints are met." in text:
        met = True
    elif "Timing constraints are not met." in text:
        met = False
    else:
        raise ReportError(f"{path}: no timing verdict ('... constraints are met' / 'are not met')")
    intra = {row["Clock"]: row for row in _value_table(_section(lines, "Intra Clock Table"), "Clock")}
    clocks = []
    for line in _section(lines, "Clock Summary"):
        m = _CLOCK_LINE.match(line)
        if not m:
            continue
        name = m.group(2)
        row = intra.get(name, {})
        clocks.append(ClockTiming(
            name=name, period_ns=float(m.group(5)), frequency_mhz=float(m.group(6)),
            wns_ns=_optional_number(row.get("WNS(ns)")),
            whs_ns=_optional_number(row.get("WHS(ns)")),
        ))
    return TimingReport(tool_version=header.get("Tool Version", ""), device=header.get("Device", ""),
                        design=header.get("Design", ""), summary=summary, met=met, clocks=tuple(clocks))


@dataclass(frozen=True)
class WorstPath:
    """The first path of a ``report_timing`` text report (or of a timing summary's path details)."""

    slack_ns: float
    source: str  #: start pin, e.g. ``shiftpu_i/shiftpu_accel_0/inst/acc_reg[29]/C``
    destination: str  #: end pin
    path_type: str  #: e.g. "Setup (Max at Slow Process Corner)"
    requirement_ns: float | None
    data_path_delay_ns: float | None
    logic_levels: str | None  #: as Vivado writes it, e.g. "14  (CARRY4=8 LUT3=2 LUT5=2 LUT6=2)"

    def describe(self) -> str:
        """``A -> B (setup, slack -0.412 ns, data path 8.203 ns for 8 ns, logic levels 14: CARRY4=8 ...)``"""
        facts = [self.path_type.split()[0].lower(), f"slack {self.slack_ns:g} ns"]
        if self.data_path_delay_ns is not None:
            facts.append(f"data path {self.data_path_delay_ns:g} ns"
                         + ("" if self.requirement_ns is None else f" for {self.requirement_ns:g} ns"))
        if self.logic_levels:
            levels = re.match(r"(\d+)\s*(?:\((.*)\))?", self.logic_levels)
            if levels:
                facts.append(f"logic levels {levels.group(1)}" + (f": {levels.group(2)}" if levels.group(2) else ""))
        return f"{self.source} -> {self.destination} ({', '.join(facts)})"


_PATH_FIELD = re.compile(r"^\s+(Source|Destination|Path Type|Requirement|Data Path Delay|Logic Levels):\s+(.*?)\s*$")
_SLACK = re.compile(r"^Slack(?: \(\w+\))?\s*:\s*(-?[\d.]+)ns")
_NS = re.compile(r"^(-?[\d.]+)ns")


def parse_worst_path(path: str | Path) -> WorstPath:
    """The first path of a ``report_timing`` text report: its slack, start and end pins and what it passes."""
    path = Path(path)
    lines = _read(path)
    start = next((i for i, line in enumerate(lines) if _SLACK.match(line)), None)
    if start is None:
        raise ReportError(f"{path}: no 'Slack' line: not a Vivado report_timing report with a path")
    fields: dict[str, str] = {}
    for line in lines[start + 1:]:
        if _SLACK.match(line):
            break
        m = _PATH_FIELD.match(line)
        if m:
            fields.setdefault(m.group(1), m.group(2))
    for key in ("Source", "Destination", "Path Type"):
        if key not in fields:
            raise ReportError(f"{path}: the path has no '{key}' line")

    def ns(key: str) -> float | None:
        m = _NS.match(fields.get(key, ""))
        return float(m.group(1)) if m else None

    slack = _SLACK.match(lines[start])
    assert slack is not None  # the line was found by this pattern
    return WorstPath(slack_ns=float(slack.group(1)), source=fields["Source"], destination=fields["Destination"],
                     path_type=fields["Path Type"], requirement_ns=ns("Requirement"),
                     data_path_delay_ns=ns("Data Path Delay"), logic_levels=fields.get("Logic Levels"))


def reports_json(utilization: str | Path, timing: str | Path) -> dict[str, Any]:
    """Both reports as one JSON object (figures from Vivado's implementation, not estimates)."""
    return {
        "source": "Vivado implementation reports (report_utilization, report_timing_summary)",
        "utilization": parse_utilization(utilization).to_json(),
        "timing": parse_timing_summary(timing).to_json(),
    }
