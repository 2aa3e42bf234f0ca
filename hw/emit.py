"""Verilog emission of the accelerator (top module ``shiftpu_accel``)."""

from __future__ import annotations

from pathlib import Path

from shiftpu.arch.config import AccelConfig


def verilog(cfg: AccelConfig) -> str:
    """Verilog text of the accelerator generated from ``cfg``."""
    from amaranth.back import verilog as amaranth_verilog

    from shiftpu.hw.top import TOP_NAME, Accelerator

    top = Accelerator(cfg)
    return amaranth_verilog.convert(top, name=TOP_NAME, emit_src=False)


def write_verilog(cfg: AccelConfig, path: str | Path) -> Path:
    """Write the Verilog of ``cfg`` to ``path`` (parent folders created); returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(verilog(cfg))
    return path
