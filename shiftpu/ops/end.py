"""END: closes every program; the accelerator raises DONE and the interrupt."""

from __future__ import annotations

from shiftpu.arch.isa import Opcode
from shiftpu.ops.spec import OpSpec

SPEC = OpSpec(Opcode.END, golden=None, disasm_fields=None, lower=None,
              cost="shiftpu.compiler.perf:end_cost", random_case=None)
