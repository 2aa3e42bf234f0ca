"""Generates the contract tables of docs/architecture.md from the code (``make docs``).

Each table lives between ``<!-- BEGIN name -->`` and ``<!-- END name -->`` markers; a test checks the
committed document equals what this module generates, so the document cannot drift from the code.
"""

from __future__ import annotations

import argparse
import re
from dataclasses import fields
from pathlib import Path

from shiftpu.arch import regmap
from shiftpu.arch.config import AccelConfig
from shiftpu.arch.isa import HEADER_LAYOUT, INSTRUCTION_LAYOUT, ISA_VERSION, Dataflow, Opcode
from shiftpu.arch.numerics import SHIFT4_VALUES, Activation


def _config_table() -> str:
    default = AccelConfig()
    lines = ["| field | default | meaning |", "|---|---|---|"]
    src = Path(__file__).with_name("config.py").read_text()
    for f in fields(AccelConfig):
        m = re.search(rf"((?:    #: .+\n)+)    {f.name}:", src)
        doc = " ".join(line.strip()[3:] for line in m.group(1).splitlines()) if m else ""
        value = getattr(default, f.name)
        lines.append(f"| `{f.name}` | {getattr(value, 'name', value)} | {doc} |")
    lines.append(f"\nDefault config hash: `0x{default.config_hash():08x}`.")
    return "\n".join(lines)


def _enum_table(enum) -> str:
    lines = ["| value | name | meaning |", "|---|---|---|"]
    src = Path(__import__(enum.__module__, fromlist=["x"]).__file__).read_text()
    for member in enum:
        m = re.search(rf"{member.name} = {member.value}\s+#: (.+)", src)
        lines.append(f"| {member.value} | `{member.name}` | {m.group(1) if m else ''} |")
    return "\n".join(lines)


def _shift_code_table() -> str:
    lines = ["| code | weight | code | weight |", "|---|---|---|---|"]
    for c in range(8):
        neg = "illegal" if c == 0 else str(int(SHIFT4_VALUES[c + 8]))
        lines.append(f"| `{c:04b}` | {int(SHIFT4_VALUES[c])} | `{c + 8:04b}` | {neg} |")
    return "\n".join(lines)


def generated_sections() -> dict[str, str]:
    """name -> markdown of every generated section."""
    return {
        "config": _config_table(),
        "shift-codes": _shift_code_table(),
        "header": f"ISA version {ISA_VERSION}.\n\n" + HEADER_LAYOUT.markdown_table(),
        "instruction": INSTRUCTION_LAYOUT.markdown_table(),
        "opcodes": _enum_table(Opcode),
        "dataflows": _enum_table(Dataflow),
        "activations": _enum_table(Activation),
        "registers": regmap.markdown_table(),
        "ctrl-bits": _enum_table(regmap.Ctrl),
        "status-bits": _enum_table(regmap.Status),
        "soft-reset": regmap.SOFT_RESET_SEMANTICS,
        "error-codes": _enum_table(regmap.ErrorCode),
    }


def render(text: str) -> str:
    """The document with every generated section replaced by its current content."""
    for name, body in generated_sections().items():
        pattern = re.compile(rf"(<!-- BEGIN {name} -->\n).*?(<!-- END {name} -->)", re.S)
        if not pattern.search(text):
            raise ValueError(f"docs/architecture.md lacks the section markers for '{name}'")
        text = pattern.sub(lambda m, body=body: m.group(1) + body + "\n" + m.group(2), text)
    return text


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--write", type=Path, required=True, help="markdown file to update in place")
    args = ap.parse_args()
    args.write.write_text(render(args.write.read_text()))


if __name__ == "__main__":
    main()
