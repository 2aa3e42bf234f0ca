"""`shiftpu report`: one self-contained HTML page of a compiled model (layers, roofline, resources, pipeline)."""

from shiftpu.report.inputs import ReportError
from shiftpu.report.render import DEFAULT_NAME, render_html, write_report

__all__ = ["DEFAULT_NAME", "ReportError", "render_html", "write_report"]
