"""The HTML page: the gathered data and figures through the packaged jinja2 template, written as one file."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import jinja2
from markupsafe import Markup, escape

from shiftpu import __version__
from shiftpu.report.data import ReportData, gather
from shiftpu.report.demo_inputs import DemoResults, load_demo
from shiftpu.report.figures import Figure, gantt_figure, resource_figure, roofline_figure
from shiftpu.report.inputs import ReportError, load_bench, load_resources, load_trace

TEMPLATE = "report.html.j2"
#: Default file name inside the compiled folder.
DEFAULT_NAME = "report.html"


def _shape(shape: tuple[int, ...] | None) -> str:
    return "-" if shape is None else "x".join(str(d) for d in shape)


def _breakable(name: str) -> Markup:
    """A name with a line-break opportunity after each "_", "/" and ".", so a narrow cell breaks it there."""
    return Markup("").join(Markup("{}<wbr>").format(part) if part in "_/." else escape(part)
                           for part in re.split(r"([_/.])", name))


def figures(d: ReportData) -> tuple[list[Figure], list[tuple[str, str, str]]]:
    """The figures that can be drawn, and (id, title, text) for each section whose input is absent."""
    figs = [roofline_figure(d.roofline, d.rows, d.board.title)]
    absent = []
    if d.resources is not None:
        figs.append(resource_figure(d.resources))
    else:
        absent.append(("resources", "Resources",
                       "No resource estimate given: pass <code>--resources FILE</code>, the output of "
                       f"<code>shiftpu build-hw --board {d.board.name} --estimate --json</code> (Yosys, takes "
                       "minutes)."))
    if d.trace is not None:
        figs.append(gantt_figure(d.trace))
    else:
        absent.append(("gantt", "Pipeline Gantt chart",
                       "The pipeline was not measured: pass <code>--trace FILE</code>, written by "
                       f"<code>shiftpu bench {d.folder} --trace trace.json</code>."))
    return figs, absent


def render_html(d: ReportData) -> str:
    """The report page as one self-contained HTML text (inline CSS and SVG, no external references)."""
    env = jinja2.Environment(loader=jinja2.PackageLoader("shiftpu.report", "templates"),
                             autoescape=jinja2.select_autoescape(["html", "j2"]), undefined=jinja2.StrictUndefined)
    env.filters["shape"] = _shape
    env.filters["breakable"] = _breakable
    figs, absent = figures(d)
    context: dict[str, Any] = {
        "d": d, "est": d.estimate, "version": __version__, "figures": figs, "absent": absent,
        "n_fabric": sum(r.on_fabric for r in d.rows), "n_cpu": sum(not r.on_fabric for r in d.rows),
        "n_segments": len({r.segment for r in d.rows if r.on_fabric}),
    }
    return env.get_template(TEMPLATE).render(**context)


def write_report(compiled_dir: str | Path, out_html: str | Path | None = None, resources: str | Path | None = None,
                 trace: str | Path | None = None, bench: str | Path | None = None,
                 demo: str | Path | DemoResults | None = None) -> Path:
    """Write the HTML report of a compiled folder (default ``compiled_dir/report.html``); returns its path.

    ``resources``: JSON of `shiftpu build-hw --estimate --json`; ``trace``: Chrome trace of `shiftpu bench --trace`;
    ``bench``: JSON of `shiftpu bench --json`; ``demo``: the output folder of `shiftpu demo` (or its results), for
    what the demo measured. Sections whose input is absent say so.
    """
    data = gather(compiled_dir,
                  resources=load_resources(Path(resources)) if resources is not None else None,
                  trace=load_trace(Path(trace)) if trace is not None else None,
                  bench=load_bench(Path(bench)) if bench is not None else None,
                  demo=demo if isinstance(demo, DemoResults) or demo is None else load_demo(Path(demo)))
    out = Path(out_html) if out_html is not None else Path(compiled_dir) / DEFAULT_NAME
    html = render_html(data)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(html, encoding="utf-8")
    except OSError as e:
        raise ReportError(f"{out}: cannot write the report: {e}") from None
    return out
