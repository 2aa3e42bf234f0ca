"""The per-instruction registry (shiftpu.ops): every opcode has its semantics, lowering, disassembly, cost rule and
random test cases, and the golden model, the disassembler and the lowering take them from there."""

from __future__ import annotations

import sys
from dataclasses import fields
from importlib import import_module

import numpy as np
import pytest

from shiftpu.arch import layout
from shiftpu.arch.config import AccelConfig
from shiftpu.arch.isa import Instruction, Opcode
from shiftpu.arch.numerics import ActFormat
from shiftpu.compiler import ir
from shiftpu.compiler.disasm import format_instruction
from shiftpu.compiler.lower import instruction
from shiftpu.ops import OPS, OpSpec
from shiftpu.sim.golden import GoldenAccelerator

INSTRUCTION_FIELDS = {f.name for f in fields(Instruction)}


def _resolve(ref: str):
    module, name = ref.split(":")
    return getattr(import_module(module), name)


@pytest.mark.parametrize("opcode", list(Opcode), ids=lambda o: o.name)
def test_every_opcode_is_registered_whole(opcode):
    spec = OPS.get(opcode)
    assert isinstance(spec, OpSpec), f"{opcode.name}: no module of shiftpu.ops registers it"
    assert spec.opcode is opcode
    assert callable(_resolve(spec.cost)), f"{opcode.name}: cost rule {spec.cost} is not a function"
    if opcode is Opcode.END:
        assert (spec.golden, spec.lower, spec.disasm_fields, spec.random_case) == (None, None, None, None)
        return
    assert callable(spec.golden) and callable(spec.lower)
    assert spec.disasm_fields and set(spec.disasm_fields) <= INSTRUCTION_FIELDS
    assert spec.random_case is not None and callable(_resolve(spec.random_case))


def test_every_ir_operation_but_concatenation_lowers_to_its_opcode():
    kinds = {cls.__name__.removesuffix("Op").upper() for cls in ir.FabricOp.__subclasses__()}
    assert kinds - {"CONCAT"} == {op.name for op in OPS if op is not Opcode.END}


def test_the_golden_model_runs_the_registered_semantics(monkeypatch):
    seen = []

    def doubled(m, i, x, const, act, pc):
        seen.append((i.opcode, x.shape, pc))
        return np.minimum(2 * x.astype(np.int64), 127)

    spec = OPS[Opcode.MOVE]
    monkeypatch.setitem(OPS, Opcode.MOVE, OpSpec(**{**{f.name: getattr(spec, f.name) for f in fields(spec)},
                                                  "golden": doubled}))
    cfg = AccelConfig()
    g = GoldenAccelerator(cfg)
    act = np.zeros(1024, np.uint8)
    x = layout.pack_activation(np.array([[[0, 16], [32, 48]]]), cfg)
    act[:x.size] = x
    i = Instruction(Opcode.MOVE, in_c=1, in_h=2, in_w=2, out_c=1, out_h=2, out_w=2, out_addr=512, out_bits=8,
                    in_signed=False, out_signed=False)
    g.execute(i, np.zeros(64, np.uint8), act, pc=3)
    assert seen == [(Opcode.MOVE, (1, 2, 2), 3)]
    assert g.load(act, 512, 1, 2, 2, False, 0).ravel().tolist() == [0, 32, 64, 96]


def test_the_cost_model_calls_the_registered_rule(monkeypatch):
    from shiftpu.compiler import perf

    seen = []

    def rule(i, cfg, ddr_bytes_per_cycle, schedule, read_latency):
        seen.append((i.opcode, ddr_bytes_per_cycle, schedule, read_latency))
        return perf.InstrCost(7, 0, 7, 0, 0, 0)

    monkeypatch.setattr(sys.modules[__name__], "_move_rule", rule, raising=False)
    spec = OPS[Opcode.MOVE]
    monkeypatch.setitem(OPS, Opcode.MOVE, OpSpec(**{**{f.name: getattr(spec, f.name) for f in fields(spec)},
                                                  "cost": f"{__name__}:_move_rule"}))
    perf.cost_rule.cache_clear()
    try:
        i = Instruction(Opcode.MOVE, in_c=1, in_h=2, in_w=2, out_c=1, out_h=2, out_w=2)
        assert perf.instruction_cost(i, AccelConfig(), 4.0, perf.Schedule.RTL, 9).cycles == 7
        assert seen == [(Opcode.MOVE, 4.0, perf.Schedule.RTL, 9)]
    finally:
        perf.cost_rule.cache_clear()


def test_disassembly_prints_the_registered_fields(monkeypatch):
    i = Instruction(Opcode.MOVE, in_c=1, in_h=2, in_w=2, out_c=1, out_h=4, out_w=4, upsample=2, out_shift=1,
                    out_bits=8, in_signed=False, out_signed=False)
    assert format_instruction(i) == ("MOVE  layer_id=0 in_addr=0x0 out_addr=0x0 in_c=1 in_h=2 in_w=2 out_c=1 out_h=4 "
                                     "out_w=4 upsample=2 out_shift=1 act=NONE in_signed=0 out_signed=0 out_bits=8")
    assert format_instruction(Instruction(Opcode.END)) == "END"
    spec = OPS[Opcode.MOVE]
    monkeypatch.setitem(OPS, Opcode.MOVE, OpSpec(**{**{f.name: getattr(spec, f.name) for f in fields(spec)},
                                                  "disasm_fields": ("upsample",)}))
    assert format_instruction(i).split()[-4:] == ["upsample=2", "in_signed=0", "out_signed=0", "out_bits=8"]


def test_lowering_fills_common_and_own_fields():
    fmt = ActFormat(8, False)
    x = ir.QTensor("x", (1, 3, 5, 7), fmt, -4)
    b = ir.QTensor("b", (1, 3, 5, 7), ActFormat(8, True), -5)
    y = ir.QTensor("y", (1, 3, 5, 7), fmt, -3)
    op = ir.AddOp("add", ["x", "b"], "y", ["n0"], shift_a=1, shift_b=0, out_shift=2)
    place = {"x": ir.Placement(64, 105), "b": ir.Placement(256, 105), "y": ir.Placement(512, 105)}
    got = instruction(op, {"x": x, "b": b, "y": y}, 9, place)
    assert got == Instruction(Opcode.ADD, layer_id=9, in_c=3, in_h=5, in_w=7, out_c=3, out_h=5, out_w=7, in_addr=64,
                              in2_addr=256, out_addr=512, in_signed=False, in2_signed=True, out_signed=False, shift_a=1,
                              out_shift=2, out_bits=8)
    assert instruction(ir.ConcatOp("cat", ["x", "b"], "y", []), {"x": x, "b": b, "y": y}, 0, place) is None



def test_random_program_mixes_draw_every_instruction():
    from rtl_support import LAYER_KINDS

    from shiftpu.cli.rtl import KINDS

    conv_kinds = {"conv", "dw", "ic"}  # CONV in its three dataflows
    for mix in (LAYER_KINDS, KINDS):
        drawn = {Opcode.CONV if k in conv_kinds else Opcode[k.upper()] for k in mix}
        assert drawn == set(OPS) - {Opcode.END}, f"{mix}: the random programs never exercise the others"
