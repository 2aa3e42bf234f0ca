"""The record one instruction registers: its golden semantics, lowering, disassembly and where its cost and random
test cases live.

An instruction's module (``shiftpu/ops/<name>.py``) defines ``SPEC``; :mod:`shiftpu.ops` collects them. The
semantics see the golden model only through :class:`Machine` and the lowering sees the compiler's IR operation
only through its attributes, so this package imports nothing above ``shiftpu.arch`` (docs/layering.md).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from shiftpu.arch.config import AccelConfig
from shiftpu.arch.isa import Instruction, Opcode
from shiftpu.arch.numerics import ActFormat
from shiftpu.errors import ShiftpuError


class FieldError(ShiftpuError):
    """An instruction's constants hold what the accelerator cannot run (the golden model stops with BAD_FIELD)."""


class Machine(Protocol):
    """The golden model as an instruction's semantics see it: its config and its checked memory accesses."""

    config: AccelConfig

    def read(self, mem: np.ndarray, addr: int, n: int, pc: int) -> np.ndarray:
        """``n`` bytes of a segment from ``addr``; an access beyond the segment stops the run (AXI_READ)."""
        ...

    def load(self, act: np.ndarray, addr: int, c: int, h: int, w: int, signed: bool, pc: int) -> np.ndarray:
        """A C x H x W tensor of the activation arena, in the DDR layout of shiftpu.arch.layout."""
        ...


#: golden(machine, instruction, its first input (already loaded), constant segment, activation arena, pc)
#: -> the output tensor, which the machine stores at ``out_addr``
Golden = Callable[[Machine, Instruction, np.ndarray, np.ndarray, np.ndarray, int], np.ndarray]
#: check(machine, instruction, constant segment, pc): raise FieldError where a run would refuse the constants
CheckConstants = Callable[[Machine, Instruction, np.ndarray, int], None]


@dataclass(frozen=True)
class LowerContext:
    """What lowering an IR operation needs besides the operation."""

    #: the fields every instruction has: shapes, formats, input and output addresses, activation, layer id
    common: dict[str, Any]
    #: the graph's quantized tensors by name (``shiftpu.compiler.ir.QTensor``)
    tensors: Mapping[str, Any]
    #: a tensor's byte offset in the activation arena (0 before placement)
    offset: Callable[[str], int]
    w_addr: int = 0  #: CONV: the weights in the constant segment
    qp_addr: int = 0  #: CONV: the bias/shift table in the constant segment


#: lower(IR operation, context) -> its instruction; the operation is the ``shiftpu.compiler.ir.FabricOp`` whose
#: ``kind`` is the opcode's name
Lower = Callable[[Any, LowerContext], Instruction]


@dataclass(frozen=True)
class OpSpec:
    """Everything shiftpu knows about one opcode outside the RTL (whose engine and sequencer dispatch are in hw/)."""

    opcode: Opcode
    #: its semantics on integers; None for END, which stops the run
    golden: Golden | None
    #: the fields `shiftpu disasm` prints besides those every instruction has; None: the mnemonic alone
    disasm_fields: tuple[str, ...] | None
    #: the lowering from the IR; None where no IR operation becomes this instruction (END closes every program)
    lower: Lower | None
    #: ``module:function`` of the performance model's rule for it (shiftpu.compiler.perf states every timing rule)
    cost: str
    #: ``module:function`` that appends a random instance to an RTL test program; None for END
    random_case: str | None
    #: raise FieldError for constants the accelerator would refuse, running nothing (CONV: illegal weight codes)
    check_constants: CheckConstants | None = None


def output_format(i: Instruction) -> ActFormat:
    """The format an instruction's output saturates to."""
    return ActFormat(i.out_bits, i.out_signed)
