"""Random test programs: layers with random shapes, tilings, weights and formats, as memory images.

Every layer reads its own random input tensor(s) from the activation arena and writes its own output
region, so one program exercises many layers and the whole arena can be compared bit for bit
between backends. Used by the RTL regression and the testbenches; the reference is always the
golden model, never a stored output.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np

from shiftpu.arch import layout, limits
from shiftpu.arch.config import AccelConfig
from shiftpu.arch.isa import INSTR_BYTES, Dataflow, Instruction, Opcode, encode_program
from shiftpu.arch.numerics import MAX_WEIGHT_EXPONENT, Activation


@dataclass
class ProgramImage:
    """A program's two DDR segments: constants (program, weights, tables) and the activation arena."""

    const: np.ndarray
    act: np.ndarray
    instructions: list[Instruction] = field(default_factory=list)


class ProgramBuilder:
    """Collects instructions, constant blobs and arena tensors; lays them out per the DDR contract."""

    def __init__(self, cfg: AccelConfig):
        self.cfg = cfg
        self.instrs: list[Instruction] = []
        self.blob = bytearray()
        self.arena = bytearray()

    def constant(self, data: np.ndarray) -> int:
        """Append a blob; returns its offset inside the blob area (relocated in :meth:`image`)."""
        off = len(self.blob)
        self.blob += data.tobytes()
        self.blob += bytes(layout.align(len(self.blob)) - len(self.blob))
        return off

    def tensor(self, t: np.ndarray | None, c: int, h: int, w: int) -> int:
        """Place a tensor (or reserve space for an output) in the arena; returns its ACT offset."""
        off = len(self.arena)
        n = layout.activation_bytes(c, h, w, self.cfg)
        self.arena += layout.pack_activation(t, self.cfg).tobytes() if t is not None else bytes(n)
        self.arena += bytes(layout.align(len(self.arena)) - len(self.arena))
        return off

    def image(self) -> ProgramImage:
        program_bytes = layout.align(INSTR_BYTES * (len(self.instrs) + 2))
        instrs = [replace(i, w_addr=i.w_addr + program_bytes, qp_addr=i.qp_addr + program_bytes)
                  if i.opcode is Opcode.CONV else i for i in self.instrs]
        prog = encode_program(instrs, self.cfg.config_hash())
        const = bytearray(prog) + bytes(program_bytes - len(prog)) + self.blob
        return ProgramImage(np.frombuffer(bytes(const), dtype=np.uint8).copy(),
                            np.frombuffer(bytes(self.arena), dtype=np.uint8).copy(), instrs)


def _random_input(rng: np.random.Generator, c: int, h: int, w: int, signed: bool) -> np.ndarray:
    if signed:
        return rng.integers(-128, 128, size=(c, h, w)).astype(np.int8)
    return rng.integers(0, 256, size=(c, h, w)).astype(np.uint8)


def _random_format(rng: np.random.Generator, cfg: AccelConfig) -> dict:
    bits = int(rng.choice([4, 8])) if cfg.act_bits == 8 else 4
    act = Activation(int(rng.integers(0, 3)))
    return {"out_bits": bits, "out_signed": bool(rng.integers(0, 2)) and act is not Activation.RELU,
            "act": act, "leaky_shift": int(rng.integers(0, 4)) if act is Activation.LEAKY else 0}


def add_random_conv(b: ProgramBuilder, rng: np.random.Generator, *, dataflow: Dataflow = Dataflow.PIXEL,
                    max_hw: int = 12, max_c: int = 20) -> Instruction:
    """Append a CONV with random shape, tiling, weights, bias and shifts that the accelerator accepts."""
    cfg = b.cfg
    depthwise = dataflow is Dataflow.DEPTHWISE
    for _ in range(1000):
        kh, kw = (int(v) for v in rng.integers(1, min(cfg.max_kernel, 5) + 1, size=2))
        stride = int(rng.integers(1, 3))
        pads = [int(rng.integers(0, k)) for k in (kh, kw, kh, kw)]
        in_h, in_w = (int(v) for v in rng.integers(1, max_hw + 1, size=2))
        in_c = int(rng.integers(1, max_c + 1))
        out_c = in_c if depthwise else int(rng.integers(1, max_c + 1))
        out_h = (in_h + pads[0] + pads[2] - kh) // stride + 1
        out_w = (in_w + pads[1] + pads[3] - kw) // stride + 1
        if min(out_h, out_w) < 1:
            continue
        strip_w = int(rng.integers(1, min(cfg.strip_width, out_w) + 1))
        oc_tile = cfg.pe_oc * int(rng.integers(1, -(-out_c // cfg.pe_oc) + 1))
        ic_tile = oc_tile if depthwise else int(rng.choice([in_c, cfg.channel_block * int(rng.integers(1, 3))]))
        fmt = _random_format(rng, cfg)
        instr = Instruction(
            Opcode.CONV, dataflow=dataflow, depthwise=depthwise,
            in_signed=bool(rng.integers(0, 2)), kh=kh, kw=kw, stride=stride, pad_t=pads[0], pad_l=pads[1],
            pad_b=pads[2], pad_r=pads[3], in_h=in_h, in_w=in_w, in_c=in_c, out_h=out_h, out_w=out_w, out_c=out_c,
            strip_w=strip_w, ic_tile=ic_tile, oc_tile=oc_tile, **fmt)
        if limits.violation(instr, cfg) is None:
            break
    else:
        raise RuntimeError("no acceptable random CONV found")
    return add_conv(b, rng, instr)


def add_conv(b: ProgramBuilder, rng: np.random.Generator, instr: Instruction) -> Instruction:
    """Append the CONV ``instr`` (shape, tiling and format as given) with random weights, bias, shifts and input."""
    cfg = b.cfg
    problem = limits.violation(instr, cfg)
    if problem is not None:
        raise ValueError(f"CONV not accepted by the accelerator: {problem}")
    kh, kw, in_c, in_h, in_w = instr.kh, instr.kw, instr.in_c, instr.in_h, instr.in_w
    out_c, out_h, out_w = instr.out_c, instr.out_h, instr.out_w
    icg = 1 if instr.depthwise else in_c
    mags = rng.integers(0, MAX_WEIGHT_EXPONENT + 1, size=(out_c, icg, kh, kw))
    w = np.where(rng.random(mags.shape) < 0.2, 0, (1 << mags) * rng.choice([-1, 1], size=mags.shape))
    shift = rng.integers(-1, 14, size=out_c)
    bias = rng.integers(-(1 << 14), 1 << 14, size=out_c)
    w_off = b.constant(layout.pack_weights(w, instr.dataflow, cfg))
    qp_off = b.constant(layout.pack_qparams(bias, shift, cfg))
    x = _random_input(rng, in_c, in_h, in_w, instr.in_signed)
    instr = replace(instr, in_addr=b.tensor(x, in_c, in_h, in_w), out_addr=b.tensor(None, out_c, out_h, out_w),
                    w_addr=w_off, qp_addr=qp_off)
    b.instrs.append(instr)
    return instr


def add_random_eltwise(b: ProgramBuilder, rng: np.random.Generator, op: Opcode, max_hw: int = 12,
                       max_c: int = 20) -> Instruction:
    """Append a POOL, ADD or MOVE with random shape and formats."""
    cfg = b.cfg
    c = int(rng.integers(1, max_c + 1))
    in_h, in_w = (int(v) for v in rng.integers(1, max_hw + 1, size=2))
    fields: dict = {"in_signed": bool(rng.integers(0, 2)), "in2_signed": bool(rng.integers(0, 2)),
                    "out_shift": int(rng.integers(-2, 5)), **_random_format(rng, cfg)}
    if op is Opcode.POOL:
        k = int(rng.integers(1, 4))
        s = int(rng.integers(1, 3))
        pad = int(rng.integers(0, k))
        in_h, in_w = max(in_h, k), max(in_w, k)
        out_h = (in_h + 2 * pad - k) // s + 1
        out_w = (in_w + 2 * pad - k) // s + 1
        fields.update(kh=k, kw=k, stride=s, pad_t=pad, pad_l=pad, pad_b=pad, pad_r=pad)
    elif op is Opcode.MOVE:
        up = int(rng.integers(1, 3))
        out_h, out_w = in_h * up, in_w * up
        fields.update(upsample=up)
    else:
        out_h, out_w = in_h, in_w
        fields.update(shift_a=int(rng.integers(0, 6)), shift_b=int(rng.integers(0, 6)))
    x = _random_input(rng, c, in_h, in_w, fields["in_signed"])
    in_addr = b.tensor(x, c, in_h, in_w)
    in2_addr = 0
    if op is Opcode.ADD:
        in2_addr = b.tensor(_random_input(rng, c, in_h, in_w, fields["in2_signed"]), c, in_h, in_w)
    instr = Instruction(op, in_h=in_h, in_w=in_w, in_c=c, out_h=out_h, out_w=out_w, out_c=c, in_addr=in_addr,
                        in2_addr=in2_addr, out_addr=b.tensor(None, c, out_h, out_w), **fields)
    b.instrs.append(instr)
    return instr
