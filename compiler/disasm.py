"""Readable listing of a compiled folder: memory map, then each segment's header and instructions."""

from __future__ import annotations

from shiftpu.arch.isa import Instruction, Opcode, ProgramHeader
from shiftpu.compiled.folder import CompiledFolder
from shiftpu.ops import OPS

#: Fields every instruction prints first; each opcode's own follow (shiftpu.ops), then its formats.
_ALWAYS = ("layer_id", "in_addr", "out_addr", "in_c", "in_h", "in_w", "out_c", "out_h", "out_w")


def format_instruction(i: Instruction) -> str:
    own = OPS[i.opcode].disasm_fields
    if own is None:
        return i.opcode.name
    fields = []
    for name in _ALWAYS + own + ("in_signed", "out_signed", "out_bits"):
        v = getattr(i, name)
        if name.endswith("_addr"):
            fields.append(f"{name}=0x{v:x}")
        elif hasattr(v, "name"):
            fields.append(f"{name}={v.name}")
        else:
            fields.append(f"{name}={int(v)}")
    return f"{i.opcode.name:<5} " + " ".join(fields)


def disassemble(c: CompiledFolder) -> str:
    m = c.manifest
    lines = [f"compiled by shiftpu {m['shiftpu_version']} for board {m['board']}, ISA {m['isa_version']}, "
             f"config hash {m['config_hash']}", f"activation arena: {m['arena_bytes']} bytes", "", "memory map (ACT_BASE +):"]
    placed = sorted(((t["offset"], n, t) for n, t in m["tensors"].items() if "offset" in t), key=lambda e: e[0])
    for off, name, t in placed:
        inside = f"  inside {t['inside'][0]} from channel {t['inside'][1]}" if "inside" in t else ""
        lines.append(f"  0x{off:08x} {t['nbytes']:>10} B  {name}  {t['dtype']} {tuple(t['chw'])} "
                     f"scale 2^{t['scale_exp']}{inside}")
    names = {la["layer_id"]: la["name"] for la in m["layers"]}
    for seg, prog, img in zip(m["segments"], c.programs(), c.images, strict=True):
        h = ProgramHeader.decode(img.tobytes())
        lines += ["", f"segment {seg['index']} ({seg['const']}, {seg['const_bytes']} bytes): "
                      f"ISA {h.isa_version}, config hash 0x{h.config_hash:08x}, {h.n_instr} instructions"]
        for k, i in enumerate(prog):
            label = f"  ; {names.get(i.layer_id, '')}" if i.opcode is not Opcode.END else ""
            lines.append(f"  {k:4d}: {format_instruction(i)}{label}")
    cpu = m["cpu_nodes"]
    if cpu:
        lines += ["", "CPU nodes:"] + [f"  {n['op_type']} {n['name']}: {n['why']}" for n in cpu]
    return "\n".join(lines)
