"""The golden model: executes a binary program on the two DDR segments exactly as the accelerator does.

Each instruction is decoded from its 64 bytes, its operands are read from the byte images through the DDR
layout of shiftpu.arch.layout, and the result is written back the same way. Arithmetic is exact integer
arithmetic (convolutions as float64 matrix products, exact for these magnitudes), so the result is
independent of the tiling and dataflow fields, which only order the hardware's work.
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
from shiftpu.arch.numerics import ActFormat, Activation, requantize
from shiftpu.arch.regmap import ErrorCode
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
                if instr.opcode is not Opcode.CONV:
                    if instr.opcode is Opcode.END:
                        return
                    continue
                raw = self._weight_bytes(instr, const, pc)
            except AcceleratorError:
                return
            self._unpack_weights(instr, raw, pc)

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

    def _load(self, act: np.ndarray, addr: int, c: int, h: int, w: int, signed: bool, pc: int) -> np.ndarray:
        n = layout.activation_bytes(c, h, w, self.config)
        return layout.unpack_activation(self._slice(act, addr, n, pc), c, h, w, signed, self.config)

    def _store(self, act: np.ndarray, addr: int, t: np.ndarray, pc: int) -> None:
        data = layout.pack_activation(t, self.config)
        self._slice(act, addr, data.size, pc, write=True)[:] = data

    # -- instructions ----------------------------------------------------------------------------------

    def execute(self, i: Instruction, const: np.ndarray, act: np.ndarray, pc: int = 0) -> None:
        """Execute one (non-END) instruction."""
        fmt = ActFormat(i.out_bits, i.out_signed)
        x = self._load(act, i.in_addr, i.in_c, i.in_h, i.in_w, i.in_signed, pc)
        if i.opcode is Opcode.CONV:
            out = self._conv(i, x, const, pc, fmt)
        elif i.opcode is Opcode.POOL:
            out = requantize(self._maxpool(i, x), i.out_shift, fmt, i.act, i.leaky_shift)
        elif i.opcode is Opcode.ADD:
            b = self._load(act, i.in2_addr, i.in_c, i.in_h, i.in_w, i.in2_signed, pc)
            s = (x.astype(np.int64) << i.shift_a) + (b.astype(np.int64) << i.shift_b)
            out = requantize(s, i.out_shift, fmt, i.act, i.leaky_shift)
        else:  # MOVE
            y = x.astype(np.int64)
            if i.upsample > 1:
                y = y.repeat(i.upsample, axis=1).repeat(i.upsample, axis=2)
            out = requantize(y, i.out_shift, fmt, i.act, i.leaky_shift)
        self._store(act, i.out_addr, out, pc)

    def _conv(self, i: Instruction, x: np.ndarray, const: np.ndarray, pc: int, fmt: ActFormat) -> np.ndarray:
        cfg = self.config
        w = self._unpack_weights(i, self._weight_bytes(i, const, pc), pc)
        bias, shift = layout.unpack_qparams(self._slice(const, i.qp_addr, layout.qparam_bytes(i.out_c, cfg), pc),
                                            i.out_c)
        # float32 sums are exact while every partial sum stays below 2^24; otherwise use float64
        in_max = max(abs(int(x.min(initial=0))), int(x.max(initial=0)))
        bound = int(np.abs(w.astype(np.int64)).reshape(i.out_c, -1).sum(axis=1).max(initial=0)) * in_max
        ftype = np.float32 if bound < (1 << 24) else np.float64
        xp = np.pad(x.astype(ftype), ((0, 0), (i.pad_t, i.pad_b), (i.pad_l, i.pad_r)))
        s, oh, ow = i.stride, i.out_h, i.out_w
        wf = w.astype(ftype)
        taps = [(ky, kx) for ky in range(i.kh) for kx in range(i.kw)]
        if i.depthwise:
            acc = np.zeros((i.out_c, oh * ow), dtype=ftype)
            for ky, kx in taps:
                xs = xp[:, ky: ky + s * (oh - 1) + 1: s, kx: kx + s * (ow - 1) + 1: s].reshape(i.in_c, -1)
                acc += wf[:, 0, ky, kx][:, None] * xs
        else:
            cols = np.empty((len(taps), i.in_c, oh, ow), dtype=ftype)  # im2col: one matrix product per layer
            for t, (ky, kx) in enumerate(taps):
                cols[t] = xp[:, ky: ky + s * (oh - 1) + 1: s, kx: kx + s * (ow - 1) + 1: s]
            wmat = wf.transpose(0, 2, 3, 1).reshape(i.out_c, -1)
            acc = wmat @ cols.reshape(len(taps) * i.in_c, oh * ow)
        total = acc.astype(np.int64).reshape(i.out_c, oh, ow) + bias.astype(np.int64)[:, None, None]
        return requantize(total, shift.astype(np.int64)[:, None, None], fmt, Activation(i.act), i.leaky_shift)

    def _weight_bytes(self, i: Instruction, const: np.ndarray, pc: int) -> np.ndarray:
        icg = 1 if i.depthwise else i.in_c
        return self._slice(const, i.w_addr, layout.weight_bytes(i.out_c, icg, i.kh, i.kw, i.dataflow, self.config), pc)

    def _unpack_weights(self, i: Instruction, raw: np.ndarray, pc: int) -> np.ndarray:
        """The CONV's integer weights; an illegal code stops the run with BAD_FIELD at ``pc``."""
        icg = 1 if i.depthwise else i.in_c
        try:
            return layout.unpack_weights(raw, i.out_c, icg, i.kh, i.kw, i.dataflow, self.config)
        except ValueError as e:
            raise AcceleratorError(ErrorCode.BAD_FIELD, pc, f"weights: {e}") from None

    @staticmethod
    def _maxpool(i: Instruction, x: np.ndarray) -> np.ndarray:
        low = np.iinfo(np.int64).min
        xp = np.pad(x.astype(np.int64), ((0, 0), (i.pad_t, i.pad_b), (i.pad_l, i.pad_r)), constant_values=low)
        s, oh, ow = i.stride, i.out_h, i.out_w
        out = np.full((i.in_c, oh, ow), low, dtype=np.int64)
        for ky in range(i.kh):
            for kx in range(i.kw):
                np.maximum(out, xp[:, ky: ky + s * (oh - 1) + 1: s, kx: kx + s * (ow - 1) + 1: s], out=out)
        return out
