"""The instruction set: layer descriptors, their 512-bit binary layout, and the program container.

One instruction describes a whole layer operation (a convolution, a pooling, a residual add, a move
or upsample); the accelerator's sequencer runs the column-prior tiling loops itself from the tiling
fields. A program is a 64-byte header followed by 64-byte instructions and ends with ``END``.
The semantics of each opcode are stated in docs/architecture.md and implemented by its module of
``shiftpu.ops``, which the golden model (``shiftpu.sim``) runs; the RTL decoder slices the same
:data:`INSTRUCTION_LAYOUT`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from enum import IntEnum

from shiftpu.arch.bitfield import BitLayout, Field, LayoutError
from shiftpu.arch.numerics import Activation
from shiftpu.errors import ShiftpuError

#: Version of the instruction encoding; bumped on any change of layout or semantics.
ISA_VERSION = 1
#: Bytes per instruction (and per program header).
INSTR_BYTES = 64
INSTR_BITS = INSTR_BYTES * 8
#: First word of every program: ASCII "SPU" + ISA generation.
PROGRAM_MAGIC = 0x31555053  # b"SPU1" little-endian


class IsaError(ShiftpuError, ValueError):
    """A malformed instruction or program."""


class Opcode(IntEnum):
    END = 0  #: stop; the accelerator raises DONE and the interrupt
    CONV = 1  #: convolution (dense or depthwise) + bias + requantisation + activation
    POOL = 2  #: max pooling + requantisation
    ADD = 3  #: element-wise add of two tensors with alignment shifts + requantisation
    MOVE = 4  #: copy (optionally nearest-upsampled) + requantisation; concat/resize/rescale


class Dataflow(IntEnum):
    """How a CONV is mapped onto the PE array (pe_oc rows x pe_px columns)."""

    PIXEL = 0  #: rows: output channels, columns: adjacent output pixels; inputs broadcast along rows
    INPUT_CHANNEL = 1  #: rows: output channels, columns: input channels summed by an adder tree
    DEPTHWISE = 2  #: rows: channels (each its own input), columns: adjacent output pixels


_FIELDS = [
    Field("opcode", 4, "operation (Opcode)"),
    Field("dataflow", 2, "PE-array mapping for CONV (Dataflow)"),
    Field("act", 2, "fused activation (0 none, 1 ReLU, 2 LeakyReLU)"),
    Field("leaky_shift", 4, "LeakyReLU slope 2^-leaky_shift"),
    Field("in_signed", 1, "input tensor is int8 (else uint8)"),
    Field("in2_signed", 1, "second input (ADD) is int8 (else uint8)"),
    Field("out_signed", 1, "output saturates to the signed range"),
    Field("out_bits", 4, "output width in bits (4 or 8)"),
    Field("depthwise", 1, "CONV: groups == channels"),
    Field("kh", 3, "kernel height (CONV, POOL), 1..7"),
    Field("kw", 3, "kernel width (CONV, POOL), 1..7"),
    Field("stride", 2, "stride (CONV, POOL), 1..2"),
    Field("pad_t", 3, "zero (CONV) / ignored (POOL) rows above"),
    Field("pad_l", 3, "padding columns left"),
    Field("pad_b", 3, "padding rows below"),
    Field("pad_r", 3, "padding columns right"),
    Field("upsample", 2, "MOVE: nearest upsampling factor (1 or 2)"),
    Field("shift_a", 5, "ADD: left shift of input 1"),
    Field("shift_b", 5, "ADD: left shift of input 2"),
    Field("out_shift", 8, "POOL/ADD/MOVE: requantisation right shift (negative: left)", signed=True),
    Field("layer_id", 16, "index of the layer in the compiled graph (for counters and debugging)"),
    Field("in_h", 13, "input height"),
    Field("in_w", 13, "input width"),
    Field("in_c", 16, "input channels"),
    Field("out_h", 13, "output height"),
    Field("out_w", 13, "output width"),
    Field("out_c", 16, "output channels"),
    Field("strip_w", 13, "output columns per column strip (last strip may be narrower)"),
    Field("ic_tile", 16, "input channels per tile (partial sums stay on chip across tiles)"),
    Field("oc_tile", 16, "output channels per tile (multiple of pe_oc)"),
    Field("in_addr", 32, "input tensor: byte offset from ACT_BASE"),
    Field("in2_addr", 32, "second input (ADD): byte offset from ACT_BASE"),
    Field("out_addr", 32, "output tensor: byte offset from ACT_BASE"),
    Field("w_addr", 32, "packed weights: byte offset from CONST_BASE"),
    Field("qp_addr", 32, "per-channel bias/shift table: byte offset from CONST_BASE"),
]

#: The one declaration of the instruction word.
INSTRUCTION_LAYOUT = BitLayout("instruction", INSTR_BITS, _FIELDS)

#: The program header (first 64 bytes of a program).
HEADER_LAYOUT = BitLayout(
    "program header",
    INSTR_BITS,
    [
        Field("magic", 32, f"0x{PROGRAM_MAGIC:08x} (b'SPU1')"),
        Field("isa_version", 16, "ISA_VERSION the program was compiled for"),
        Field("flags", 16, "reserved for future use, 0"),
        Field("config_hash", 32, "AccelConfig.config_hash() the program was compiled for"),
        Field("n_instr", 32, "number of instructions after the header, END included"),
    ],
)

_MAX_KERNEL = 7


@dataclass(frozen=True)
class Instruction:
    """One decoded instruction (all fields of :data:`INSTRUCTION_LAYOUT`, typed)."""

    opcode: Opcode
    dataflow: Dataflow = Dataflow.PIXEL
    act: Activation = Activation.NONE
    leaky_shift: int = 0
    in_signed: bool = True
    in2_signed: bool = True
    out_signed: bool = True
    out_bits: int = 8
    depthwise: bool = False
    kh: int = 1
    kw: int = 1
    stride: int = 1
    pad_t: int = 0
    pad_l: int = 0
    pad_b: int = 0
    pad_r: int = 0
    upsample: int = 1
    shift_a: int = 0
    shift_b: int = 0
    out_shift: int = 0
    layer_id: int = 0
    in_h: int = 0
    in_w: int = 0
    in_c: int = 0
    out_h: int = 0
    out_w: int = 0
    out_c: int = 0
    strip_w: int = 0
    ic_tile: int = 0
    oc_tile: int = 0
    in_addr: int = 0
    in2_addr: int = 0
    out_addr: int = 0
    w_addr: int = 0
    qp_addr: int = 0

    def __post_init__(self) -> None:
        for name, enum in (("opcode", Opcode), ("dataflow", Dataflow), ("act", Activation)):
            try:
                object.__setattr__(self, name, enum(getattr(self, name)))
            except ValueError:
                raise IsaError(f"illegal {name} {getattr(self, name)!r}") from None
        for name in ("in_signed", "in2_signed", "out_signed", "depthwise"):
            object.__setattr__(self, name, bool(getattr(self, name)))
        self._check()

    def _check(self) -> None:
        op = self.opcode
        if op is Opcode.END:
            return
        if self.out_bits not in (4, 8):
            raise IsaError(f"{op.name}: out_bits must be 4 or 8, got {self.out_bits}")
        if min(self.in_h, self.in_w, self.in_c, self.out_h, self.out_w, self.out_c) < 1:
            raise IsaError(f"{op.name}: tensor dimensions must be >= 1")
        if op in (Opcode.CONV, Opcode.POOL):
            if not (1 <= self.kh <= _MAX_KERNEL and 1 <= self.kw <= _MAX_KERNEL):
                raise IsaError(f"{op.name}: kernel {self.kh}x{self.kw} outside 1..{_MAX_KERNEL}")
            if self.stride not in (1, 2):
                raise IsaError(f"{op.name}: stride must be 1 or 2, got {self.stride}")
            exp_h = (self.in_h + self.pad_t + self.pad_b - self.kh) // self.stride + 1
            exp_w = (self.in_w + self.pad_l + self.pad_r - self.kw) // self.stride + 1
            if (self.out_h, self.out_w) != (exp_h, exp_w):
                raise IsaError(
                    f"{op.name}: output {self.out_h}x{self.out_w} does not match input {self.in_h}x{self.in_w}, "
                    f"kernel {self.kh}x{self.kw}, stride {self.stride}, padding "
                    f"({self.pad_t},{self.pad_l},{self.pad_b},{self.pad_r}): expected {exp_h}x{exp_w}"
                )
        if op is Opcode.CONV:
            if self.depthwise and self.in_c != self.out_c:
                raise IsaError("CONV depthwise: in_c must equal out_c")
            if self.depthwise != (self.dataflow is Dataflow.DEPTHWISE):
                raise IsaError("CONV: depthwise convolutions use, and only use, the DEPTHWISE dataflow")
            if self.strip_w < 1 or self.ic_tile < 1 or self.oc_tile < 1:
                raise IsaError("CONV: strip_w, ic_tile and oc_tile must be >= 1")
        elif op in (Opcode.POOL, Opcode.ADD, Opcode.MOVE):
            up = self.upsample if op is Opcode.MOVE else 1
            if op is Opcode.MOVE and up not in (1, 2):
                raise IsaError(f"MOVE: upsample must be 1 or 2, got {up}")
            if self.in_c != self.out_c:
                raise IsaError(f"{op.name}: in_c ({self.in_c}) must equal out_c ({self.out_c})")
            if op is not Opcode.POOL and (self.out_h, self.out_w) != (self.in_h * up, self.in_w * up):
                raise IsaError(f"{op.name}: output shape must be the input shape x{up}")

    # -- binary form ----------------------------------------------------------------------------

    def to_fields(self) -> dict[str, int]:
        return {k: int(v) for k, v in asdict(self).items()}

    def encode(self) -> bytes:
        """The 64-byte little-endian binary form."""
        try:
            word = INSTRUCTION_LAYOUT.encode(self.to_fields())
        except LayoutError as e:
            raise IsaError(f"cannot encode {self.opcode.name} (layer {self.layer_id}): {e}") from None
        return word.to_bytes(INSTR_BYTES, "little")

    @classmethod
    def decode(cls, data: bytes, where: str = "instruction") -> Instruction:
        """Parse 64 bytes; raises IsaError naming the problem for a malformed word."""
        if len(data) != INSTR_BYTES:
            raise IsaError(f"{where}: expected {INSTR_BYTES} bytes, got {len(data)}")
        try:
            values = INSTRUCTION_LAYOUT.decode(int.from_bytes(data, "little"))
        except LayoutError as e:
            raise IsaError(f"{where}: {e}") from None
        try:
            return cls(**values)
        except IsaError as e:
            raise IsaError(f"{where}: {e}") from None


INSTRUCTION_FIELD_NAMES = tuple(f.name for f in fields(Instruction))
assert INSTRUCTION_FIELD_NAMES == tuple(f.name for f in _FIELDS), "Instruction and layout disagree"


@dataclass(frozen=True)
class ProgramHeader:
    config_hash: int
    n_instr: int
    isa_version: int = ISA_VERSION

    def encode(self) -> bytes:
        word = HEADER_LAYOUT.encode(
            {"magic": PROGRAM_MAGIC, "isa_version": self.isa_version, "config_hash": self.config_hash,
             "n_instr": self.n_instr}
        )
        return word.to_bytes(INSTR_BYTES, "little")

    @classmethod
    def decode(cls, data: bytes) -> ProgramHeader:
        if len(data) < INSTR_BYTES:
            raise IsaError(f"program too short for a header ({len(data)} bytes)")
        try:
            v = HEADER_LAYOUT.decode(int.from_bytes(data[:INSTR_BYTES], "little"))
        except LayoutError as e:
            raise IsaError(f"program header: {e}") from None
        if v["magic"] != PROGRAM_MAGIC:
            raise IsaError(f"not a shiftpu program: magic 0x{v['magic']:08x}, expected 0x{PROGRAM_MAGIC:08x}")
        if v["isa_version"] != ISA_VERSION:
            raise IsaError(
                f"program is for ISA version {v['isa_version']}, this shiftpu speaks version {ISA_VERSION}: "
                "recompile the model"
            )
        return cls(config_hash=v["config_hash"], n_instr=v["n_instr"], isa_version=v["isa_version"])


def encode_program(instructions: list[Instruction], config_hash: int) -> bytes:
    """Header + instructions; appends END if the list does not end with it."""
    instrs = list(instructions)
    if not instrs or instrs[-1].opcode is not Opcode.END:
        instrs.append(Instruction(Opcode.END))
    body = b"".join(i.encode() for i in instrs)
    return ProgramHeader(config_hash=config_hash, n_instr=len(instrs)).encode() + body


def decode_program(data: bytes, expect_config_hash: int | None = None) -> tuple[ProgramHeader, list[Instruction]]:
    """Parse a program; checks magic, ISA version, length, the final END and (optionally) the config hash."""
    header = ProgramHeader.decode(data)
    if expect_config_hash is not None and header.config_hash != expect_config_hash:
        raise IsaError(
            f"program was compiled for config hash 0x{header.config_hash:08x}, "
            f"the accelerator has 0x{expect_config_hash:08x}"
        )
    need = INSTR_BYTES * (1 + header.n_instr)
    if len(data) < need:
        raise IsaError(f"program truncated: header says {header.n_instr} instructions ({need} bytes), got {len(data)}")
    instrs = [
        Instruction.decode(data[INSTR_BYTES * (i + 1): INSTR_BYTES * (i + 2)], where=f"instruction {i}")
        for i in range(header.n_instr)
    ]
    if not instrs or instrs[-1].opcode is not Opcode.END:
        raise IsaError("program does not end with END")
    return header, instrs
