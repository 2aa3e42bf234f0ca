"""The golden model: executes a binary program on the two DDR segments exactly as the accelerator does.

Each instruction is decoded from its 64 bytes, its operands are read from the byte images through the DDR
layout of shiftpu.arch.layout, and the result is written back the same way. What each opcode computes is its
module's ``golden`` (shiftpu.ops): exact integer arithmetic (convolutions as float matrix products, exact for
these magnitudes), so the result is independent of the tiling and dataflow fields, which only order the
hardware's work.
"""

from __future__ import annotations

import numpy as np

from shiftpu.arch import layout, limits
from shiftpu.arch.bitfield import LayoutError
from shiftpu.arch.config import AccelConfig
from shiftpu.arch.isa import (
    HEADER_LAYOUT,
    INSTR_BYTES,
    ISA_VERSION,
    PROGRAM_MAGIC,
    Instruction,
    IsaError,
    Opcode,
)
from shiftpu.arch.regmap import ErrorCode
from shiftpu.ops import OPS, FieldError
from shiftpu.sim.accelerator import AcceleratorError, RunStats

_OPCODES = {op.value for op in Opcode}


class GoldenAccelerator:
    """Bit-exact functional model of the accelerator (no timing: see the performance model)."""

    name = "golden"

    def __init__(self, config: AccelConfig):
        self.config = config

    # -- program control -------------------------------------------------------------------------------

    def run_program(self, const: np.ndarray, act: np.ndarray) -> RunStats:
        const = np.asarray(const, dtype=np.uint8)
        if act.dtype != np.uint8 or act.ndim != 1:
            raise TypeError("the activation arena must be a 1-D uint8 array")
        n_instr = self._check_header(const)
        for pc in range(n_instr):
            instr = self._fetch(const, pc)
            if instr.opcode is Opcode.END:
                return RunStats(backend=self.name, instructions=pc + 1)
            self.execute(instr, const, act, pc)
        raise AcceleratorError(ErrorCode.NO_END, n_instr, "ran n_instr instructions without reaching END")

    def check_weight_codes(self, const: np.ndarray) -> None:
        """Raise the error a run would raise for the first CONV whose weights hold an illegal code, running nothing.

        The RTL reads an illegal code as a weight and runs on, so the runtime calls this before a program goes to
        a backend that does not run the golden model. It stops quietly at the first instruction the accelerator
        refuses by itself (header, opcode, fields, an access beyond the segment): the backend reports that one.
        """
        const = np.asarray(const, dtype=np.uint8)
        try:
            n_instr = self._check_header(const)
        except AcceleratorError:
            return
        for pc in range(n_instr):
            try:
                instr = self._fetch(const, pc)
                if instr.opcode is Opcode.END:
                    return
                check = OPS[instr.opcode].check_constants
                if check is not None:
                    check(self, instr, const, pc)
            except AcceleratorError:
                return
            except FieldError as e:
                raise AcceleratorError(ErrorCode.BAD_FIELD, pc, str(e)) from None

    def _check_header(self, const: np.ndarray) -> int:
        if const.size < INSTR_BYTES:
            raise AcceleratorError(ErrorCode.AXI_READ, 0, "constant segment too small for a program header")
        word = int.from_bytes(const[:INSTR_BYTES].tobytes(), "little")
        fields = {f.name: (word >> HEADER_LAYOUT.offsets[f.name]) & ((1 << f.bits) - 1) for f in HEADER_LAYOUT.fields}
        if fields["magic"] != PROGRAM_MAGIC:
            raise AcceleratorError(ErrorCode.BAD_MAGIC, 0, f"magic 0x{fields['magic']:08x}")
        if fields["isa_version"] != ISA_VERSION:
            raise AcceleratorError(ErrorCode.ISA_VERSION, 0, f"program ISA version {fields['isa_version']}")
        if fields["config_hash"] != self.config.config_hash():
            raise AcceleratorError(
                ErrorCode.CONFIG_HASH, 0,
                f"program config hash 0x{fields['config_hash']:08x}, accelerator 0x{self.config.config_hash():08x}",
            )
        return fields["n_instr"]

    def _fetch(self, const: np.ndarray, pc: int) -> Instruction:
        start = INSTR_BYTES * (pc + 1)
        raw = const[start: start + INSTR_BYTES]
        if raw.size < INSTR_BYTES:
            raise AcceleratorError(ErrorCode.AXI_READ, pc, "instruction beyond the constant segment")
        data = raw.tobytes()
        if data[0] & 0xF not in _OPCODES:
            raise AcceleratorError(ErrorCode.ILLEGAL_OPCODE, pc, f"opcode {data[0] & 0xF}")
        try:
            instr = Instruction.decode(data, where=f"instruction {pc}")
        except (IsaError, LayoutError) as e:
            raise AcceleratorError(ErrorCode.BAD_FIELD, pc, str(e)) from None
        problem = limits.violation(instr, self.config)
        if problem:
            raise AcceleratorError(ErrorCode.BAD_FIELD, pc, problem)
        return instr

    # -- memory ----------------------------------------------------------------------------------------

    @staticmethod
    def _slice(mem: np.ndarray, addr: int, n: int, pc: int, write: bool = False) -> np.ndarray:
        if addr + n > mem.size:
            code = ErrorCode.AXI_WRITE if write else ErrorCode.AXI_READ
            raise AcceleratorError(code, pc, f"access [{addr}, {addr + n}) beyond a segment of {mem.size} bytes")
        return mem[addr: addr + n]

    def read(self, mem: np.ndarray, addr: int, n: int, pc: int) -> np.ndarray:
        """``n`` bytes of a segment from ``addr`` (AXI_READ beyond it)."""
        return self._slice(mem, addr, n, pc)

    def load(self, act: np.ndarray, addr: int, c: int, h: int, w: int, signed: bool, pc: int) -> np.ndarray:
        """A C x H x W tensor of the activation arena."""
        n = layout.activation_bytes(c, h, w, self.config)
        return layout.unpack_activation(self._slice(act, addr, n, pc), c, h, w, signed, self.config)

    def _store(self, act: np.ndarray, addr: int, t: np.ndarray, pc: int) -> None:
        data = layout.pack_activation(t, self.config)
        self._slice(act, addr, data.size, pc, write=True)[:] = data

    # -- instructions ----------------------------------------------------------------------------------

    def execute(self, i: Instruction, const: np.ndarray, act: np.ndarray, pc: int = 0) -> None:
        """Execute one (non-END) instruction: its opcode's semantics (shiftpu.ops) on the loaded input."""
        x = self.load(act, i.in_addr, i.in_c, i.in_h, i.in_w, i.in_signed, pc)
        try:
            out = OPS[i.opcode].golden(self, i, x, const, act, pc)
        except FieldError as e:
            raise AcceleratorError(ErrorCode.BAD_FIELD, pc, str(e)) from None
        self._store(act, i.out_addr, out, pc)
