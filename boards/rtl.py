"""The accelerator's Verilog for a config, from the hardware generator (``shiftpu.hw.emit``)."""

from __future__ import annotations

import hashlib
from importlib import import_module
from importlib.util import find_spec

from shiftpu.arch.config import AccelConfig
from shiftpu.errors import ShiftpuError

#: Top module of the generated accelerator.
TOP_MODULE = "shiftpu_accel"


class GeneratorMissingError(ShiftpuError):
    """The hardware generator (shiftpu.hw.emit) cannot run here: Amaranth is not installed."""


def generator_available() -> bool:
    """Whether the hardware generator can run: shiftpu.hw.emit ships with every install, Amaranth only with the
    hw extra."""
    return find_spec("amaranth") is not None and find_spec("shiftpu.hw.emit") is not None


def accelerator_verilog(cfg: AccelConfig) -> str:
    """Verilog of the accelerator for ``cfg`` (top module ``shiftpu_accel``)."""
    if not generator_available():
        raise GeneratorMissingError("the hardware generator shiftpu.hw.emit needs Amaranth: "
                                    "install shiftpu with the 'hw' extra (pip install 'shiftpu[hw]')")
    emit = import_module("shiftpu.hw.emit")
    return emit.verilog(cfg)


def verilog_digest(text: str) -> str:
    """Short SHA-256 of a Verilog text (cache key: the same config from a changed generator differs)."""
    return hashlib.sha256(text.encode()).hexdigest()[:16]
