"""Bit-field layouts: named, typed fields packed LSB-first into a fixed-width word.

The ISA and the register map are both declared as :class:`BitLayout` s, so encode, decode, the RTL
decoders and the documentation tables all come from one declaration.
"""

from __future__ import annotations

from dataclasses import dataclass

from shiftpu.errors import ShiftpuError


class LayoutError(ShiftpuError, ValueError):
    """A value does not fit its field, or a word does not decode."""


@dataclass(frozen=True)
class Field:
    """One field: ``bits`` wide, two's complement if ``signed``."""

    name: str
    bits: int
    doc: str
    signed: bool = False

    @property
    def min(self) -> int:
        return -(1 << (self.bits - 1)) if self.signed else 0

    @property
    def max(self) -> int:
        return (1 << (self.bits - 1)) - 1 if self.signed else (1 << self.bits) - 1


class BitLayout:
    """Fields packed from bit 0 upwards; the bits above the last field are reserved (must be 0)."""

    def __init__(self, name: str, width: int, fields: list[Field]):
        self.name = name
        self.width = width
        self.fields = tuple(fields)
        self.offsets: dict[str, int] = {}
        pos = 0
        for f in self.fields:
            if f.name in self.offsets:
                raise LayoutError(f"{name}: field {f.name} declared twice")
            self.offsets[f.name] = pos
            pos += f.bits
        if pos > width:
            raise LayoutError(f"{name}: fields need {pos} bits, word has {width}")
        self.used_bits = pos
        self.by_name = {f.name: f for f in self.fields}

    def encode(self, values: dict[str, int]) -> int:
        """Pack field values (missing fields are 0) into an integer word."""
        unknown = set(values) - set(self.by_name)
        if unknown:
            raise LayoutError(f"{self.name}: unknown field(s) {sorted(unknown)}")
        word = 0
        for f in self.fields:
            v = int(values.get(f.name, 0))
            if not f.min <= v <= f.max:
                raise LayoutError(f"{self.name}.{f.name}={v} does not fit {f.bits} bits ({f.min}..{f.max})")
            word |= (v & ((1 << f.bits) - 1)) << self.offsets[f.name]
        return word

    def decode(self, word: int) -> dict[str, int]:
        """Unpack an integer word; set reserved bits raise LayoutError."""
        if word < 0 or word >> self.width:
            raise LayoutError(f"{self.name}: word does not fit {self.width} bits")
        if word >> self.used_bits:
            raise LayoutError(
                f"{self.name}: reserved bits {self.used_bits}..{self.width - 1} are not zero "
                f"(0x{word >> self.used_bits:x}): not a valid {self.name} for this ISA version"
            )
        out: dict[str, int] = {}
        for f in self.fields:
            raw = (word >> self.offsets[f.name]) & ((1 << f.bits) - 1)
            if f.signed and raw >> (f.bits - 1):
                raw -= 1 << f.bits
            out[f.name] = raw
        return out

    def table_rows(self) -> list[tuple[str, str, int, str, str]]:
        """(field, bits 'hi:lo', width, signedness, doc) for documentation."""
        rows = []
        for f in self.fields:
            lo = self.offsets[f.name]
            rows.append((f.name, f"{lo + f.bits - 1}:{lo}", f.bits, "signed" if f.signed else "unsigned", f.doc))
        return rows

    def markdown_table(self) -> str:
        lines = ["| field | bits | width | type | meaning |", "|---|---|---|---|---|"]
        for name, span, bits, sign, doc in self.table_rows():
            lines.append(f"| `{name}` | {span} | {bits} | {sign} | {doc} |")
        lines.append(f"| (reserved) | {self.width - 1}:{self.used_bits} | {self.width - self.used_bits} | | must be 0 |")
        return "\n".join(lines)
