"""One module per instruction: golden semantics, lowering, disassembly, and where its cost and random test cases
live, registered together.

Each module of this package that defines ``SPEC`` (an :class:`~shiftpu.ops.spec.OpSpec`) registers its opcode;
:data:`OPS` maps every :class:`~shiftpu.arch.isa.Opcode` to its record, and a test fails if one lacks it. A new
instruction is its opcode and fields in ``shiftpu/arch/isa.py``, one module here and its RTL engine
(docs/adding-an-operator.md).
"""

from __future__ import annotations

import pkgutil
from importlib import import_module

from shiftpu.arch.isa import Opcode
from shiftpu.ops.spec import FieldError, LowerContext, Machine, OpSpec


def _collect() -> dict[Opcode, OpSpec]:
    specs: dict[Opcode, OpSpec] = {}
    for info in pkgutil.iter_modules(__path__):
        spec = getattr(import_module(f"{__name__}.{info.name}"), "SPEC", None)
        if spec is None:
            continue
        if spec.opcode in specs:
            raise ImportError(f"shiftpu.ops.{info.name} registers {spec.opcode.name}, which another module registers")
        specs[spec.opcode] = spec
    return dict(sorted(specs.items()))


#: Every registered instruction, by opcode.
OPS: dict[Opcode, OpSpec] = _collect()

__all__ = ["OPS", "FieldError", "LowerContext", "Machine", "OpSpec"]
