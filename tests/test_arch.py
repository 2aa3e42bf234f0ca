"""The accelerator contract: config hash, number formats, ISA encode/decode, layout, generated docs."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import fields
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shiftpu.arch import layout, numerics
from shiftpu.arch.config import AccelConfig, ConfigError
from shiftpu.arch.docs import render
from shiftpu.arch.isa import (
    INSTR_BYTES,
    INSTRUCTION_LAYOUT,
    Dataflow,
    Instruction,
    IsaError,
    Opcode,
    decode_program,
    encode_program,
)
from shiftpu.arch.regmap import REGISTERS

ROOT = Path(__file__).resolve().parents[1]


# -- AccelConfig --------------------------------------------------------------------------------------


#: Every field given, so that only the hash itself decides the value below.
EVERY_FIELD = dict(pe_oc=16, pe_px=8, act_bits=4, weight_code=numerics.WeightCode.SHIFT8_TWO_TERM, acc_bits=32,
                   strip_width=64, max_kernel=5, line_buffer_bytes=65536, weight_buffer_bytes=32768,
                   acc_buffer_words=4096, axi_data_bits=128, axi_addr_bits=40, max_burst_beats=16, clock_mhz=250.0)


def test_config_hash_is_pinned():
    # The hash is part of the contract with built bitstreams: a bitstream refuses programs compiled under another.
    # These literals were computed once and change only with the hash formula or the canonical JSON (field names,
    # value spelling), or for the default config with a default field value: each change strands every built
    # bitstream and compiled folder, so update them only on purpose.
    assert AccelConfig().config_hash() == 0xAC681D8E
    assert AccelConfig().canonical_json() == (
        '{"acc_bits":32,"acc_buffer_words":2048,"act_bits":8,"axi_addr_bits":32,"axi_data_bits":64,"clock_mhz":150.0,'
        '"line_buffer_bytes":32768,"max_burst_beats":16,"max_kernel":7,"pe_oc":8,"pe_px":8,"strip_width":32,'
        '"weight_buffer_bytes":16384,"weight_code":"SHIFT4"}')
    assert AccelConfig(**EVERY_FIELD).config_hash() == 0x55F17F0D
    # equal configs hash alike: an integer clock is the same clock
    assert AccelConfig(**{**EVERY_FIELD, "clock_mhz": 250}).config_hash() == 0x55F17F0D


def test_config_hash_is_sensitive_to_every_field():
    cfg = AccelConfig()
    hashes = {cfg.config_hash()}
    for f in fields(AccelConfig):
        v = getattr(cfg, f.name)
        if f.name == "weight_code":
            changed = cfg.with_(weight_code=numerics.WeightCode.SHIFT8_TWO_TERM)
        elif f.name == "max_kernel":
            changed = cfg.with_(max_kernel=5)
        elif f.name in ("act_bits",):
            changed = cfg.with_(act_bits=4)
        elif f.name in ("acc_bits",):
            changed = cfg.with_(acc_bits=48)
        elif f.name in ("axi_data_bits",):
            changed = cfg.with_(axi_data_bits=128)
        elif f.name in ("axi_addr_bits",):
            changed = cfg.with_(axi_addr_bits=40)
        elif f.name == "dsp_lanes":
            changed = cfg.with_(pe_ic=2, dsp_lanes=1)
        else:
            changed = cfg.with_(**{f.name: v * 2})
        hashes.add(changed.config_hash())
    assert len(hashes) == len(fields(AccelConfig)) + 1


def test_a_later_field_at_its_neutral_value_keeps_the_hash():
    # pe_ic came after the first version: at 1 (the hardware before it) it stays out of the hash
    assert "pe_ic" not in AccelConfig().canonical_json()
    assert AccelConfig(pe_ic=1).config_hash() == AccelConfig().config_hash()
    assert '"pe_ic":4' in AccelConfig(pe_ic=4).canonical_json()


def test_peak_macs_count_the_lanes():
    assert AccelConfig(pe_oc=8, pe_px=4, pe_ic=8).macs_per_cycle == 256


def test_config_round_trips_through_dict():
    cfg = AccelConfig(pe_oc=16, weight_code=numerics.WeightCode.SHIFT8_TWO_TERM, clock_mhz=200)
    assert AccelConfig.from_dict(cfg.to_dict()) == cfg


@pytest.mark.parametrize(
    "data, message",
    [
        ({"pe_oc": 6}, "pe_oc=6 must be a power of two"),
        ({"bogus": 1}, "unknown AccelConfig field"),
        ({"pe_px": "8"}, "pe_px must be an integer"),
        ({"weight_code": "SHIFT3"}, "weight_code='SHIFT3'"),
        ({"strip_width": 12}, "strip_width=12 must be a multiple of pe_px=8"),
        ({"pe_ic": 3}, "pe_ic=3 must be a power of two"),
        ({"pe_ic": 16}, "pe_ic=16 exceeds the channel block (8 channels"),
        ({"pe_ic": 4, "dsp_lanes": 3}, "dsp_lanes=3 must be 0..pe_ic/2"),
    ],
)
def test_bad_config_names_the_field(data, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace("[", r"\[")):
        AccelConfig.from_dict(data, source="board.json")


# -- number formats -----------------------------------------------------------------------------------


def test_shift_codes_table():
    w = np.array([0, 1, 2, 4, 8, 16, 32, 64, -1, -2, -4, -8, -16, -32, -64])
    codes = numerics.encode_shift4(w)
    assert codes.tolist() == [0, 1, 2, 3, 4, 5, 6, 7, 9, 10, 11, 12, 13, 14, 15]
    assert numerics.decode_shift4(codes).tolist() == w.tolist()


@pytest.mark.parametrize("bad", [3, 128, -3, 96, 5])
def test_unrepresentable_weight_is_refused(bad):
    with pytest.raises(numerics.NumericsError, match=f"weight {bad} is not"):
        numerics.encode_shift4(np.array([bad]))


def test_negative_zero_code_is_illegal():
    with pytest.raises(numerics.NumericsError, match="negative zero"):
        numerics.decode_shift4(np.array([8]))


@given(st.lists(st.sampled_from(numerics.two_term_values().tolist()), min_size=1, max_size=50))
def test_two_term_round_trip(values):
    w = np.array(values)
    assert numerics.decode_two_term(numerics.encode_two_term(w)).tolist() == values


def test_two_term_values_are_sums_of_two_shift_terms():
    vals = set(numerics.two_term_values().tolist())
    assert {0, 3, 5, 6, 7, -7, 96, -128, 65} <= vals  # 7 = 8 - 1, -128 = -64 - 64
    assert not {11, 127, 128, 100} & vals  # 11 = 8 + 2 + 1 needs three terms; 127, 128 beyond two/int8
    t = numerics.SHIFT4_VALUES
    brute = {int(a + b) for a in t for b in t if -128 <= a + b <= 127}
    assert vals == brute


@given(st.integers(-(2**31), 2**31 - 1), st.integers(-8, 24))
def test_shift_round_half_even_matches_float_rounding(acc, shift):
    got = int(numerics.shift_round_half_even(np.array([acc]), shift)[0])
    # exact rational reference: Python's round() is round-half-to-even on exact fractions
    from fractions import Fraction

    assert got == round(Fraction(acc) / Fraction(2) ** shift)


@given(st.integers(-(2**41), 2**41), st.integers(-128, 127), st.sampled_from(list(numerics.Activation)),
       st.integers(0, 15), st.sampled_from([numerics.INT8, numerics.UINT8, numerics.ActFormat(4, True)]))
def test_requantize_is_exact_over_the_whole_shift_field(value, shift, act, leaky, fmt):
    """Any 8-bit shift field value, also those beyond int64 shifts (e.g. 2^-100, 2^70), gives the exact result."""
    from fractions import Fraction

    s = shift + leaky if act is numerics.Activation.LEAKY and value < 0 else shift
    want = round(Fraction(value) / Fraction(2) ** s)
    if act is numerics.Activation.RELU:
        want = max(want, 0)
    want = min(max(want, fmt.qmin), fmt.qmax)
    assert int(numerics.requantize(np.array([value]), shift, fmt, act, leaky)[0]) == want


def test_requantize_matches_onnx_quantizelinear():
    """QuantizeLinear on the dequantised accumulator == requantize (power-of-two scales)."""
    import onnx
    import onnxruntime as ort
    from onnx import TensorProto, helper

    rng = np.random.default_rng(0)
    acc = rng.integers(-(2**20), 2**20, size=4096).astype(np.int32)
    acc[:8] = [4, 5, 6, 7, -5, -6, -7, 12]  # halves
    acc_scale, y_scale = 2.0**-10, 2.0**-7  # shift = 3
    graph = helper.make_graph(
        [helper.make_node("DequantizeLinear", ["a", "as"], ["f"]),
         helper.make_node("QuantizeLinear", ["f", "ys", "yz"], ["y"])],
        "rq",
        [helper.make_tensor_value_info("a", TensorProto.INT32, [4096])],
        [helper.make_tensor_value_info("y", TensorProto.INT8, [4096])],
        [helper.make_tensor("as", TensorProto.FLOAT, [], [acc_scale]),
         helper.make_tensor("ys", TensorProto.FLOAT, [], [y_scale]),
         helper.make_tensor("yz", TensorProto.INT8, [], [0])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 19)])
    onnx.checker.check_model(model)
    ref = ort.InferenceSession(model.SerializeToString()).run(None, {"a": acc})[0]
    assert np.array_equal(numerics.requantize(acc, 3), ref)


def test_requantize_activations():
    acc = np.array([-20, -9, -8, 7, 8, 9, 10000])
    assert numerics.requantize(acc, 2, numerics.INT8, numerics.Activation.RELU).tolist() == [0, 0, 0, 2, 2, 2, 127]
    assert numerics.requantize(acc, 2, numerics.UINT8).tolist() == [0, 0, 0, 2, 2, 2, 255]
    # leaky slope 1/4: negatives shift by 2 + 2
    assert numerics.requantize(acc, 2, numerics.INT8, numerics.Activation.LEAKY, 2).tolist() == [
        -1, -1, 0, 2, 2, 2, 127]
    assert numerics.requantize(acc, 2, numerics.ActFormat(4, True)).tolist() == [-5, -2, -2, 2, 2, 2, 7]


def test_pow2_exponent():
    assert numerics.pow2_exponent(np.array([0.125, 1.0, 4.0])).tolist() == [-3, 0, 2]
    with pytest.raises(numerics.NumericsError, match="not a power of two"):
        numerics.pow2_exponent(0.3)


# -- ISA ----------------------------------------------------------------------------------------------

_dims = st.integers(1, 4096)


@st.composite
def instructions(draw):
    op = draw(st.sampled_from([Opcode.CONV, Opcode.POOL, Opcode.ADD, Opcode.MOVE, Opcode.END]))
    if op is Opcode.END:
        return Instruction(op)
    kh, kw = draw(st.integers(1, 7)), draw(st.integers(1, 7))
    stride = draw(st.integers(1, 2))
    pads = [draw(st.integers(0, 7)) for _ in range(4)]
    c = draw(st.integers(1, 65535))
    common = dict(
        act=draw(st.sampled_from(list(numerics.Activation))), leaky_shift=draw(st.integers(0, 15)),
        in_signed=draw(st.booleans()), out_signed=draw(st.booleans()), out_bits=draw(st.sampled_from([4, 8])),
        layer_id=draw(st.integers(0, 65535)), in_addr=draw(st.integers(0, 2**32 - 1)),
        out_addr=draw(st.integers(0, 2**32 - 1)), out_shift=draw(st.integers(-128, 127)),
    )
    if op in (Opcode.CONV, Opcode.POOL):
        h = draw(st.integers(max(1, kh - pads[0] - pads[2]), 4096))
        w = draw(st.integers(max(1, kw - pads[1] - pads[3]), 4096))
        oh = (h + pads[0] + pads[2] - kh) // stride + 1
        ow = (w + pads[1] + pads[3] - kw) // stride + 1
        depthwise = op is Opcode.CONV and draw(st.booleans())
        df = Dataflow.DEPTHWISE if depthwise else draw(st.sampled_from([Dataflow.PIXEL, Dataflow.INPUT_CHANNEL]))
        oc = c if depthwise or op is Opcode.POOL else draw(st.integers(1, 65535))
        extra = dict(dataflow=df, depthwise=depthwise, strip_w=draw(st.integers(1, 4096)),
                     ic_tile=draw(st.integers(1, 65535)), oc_tile=draw(st.integers(1, 65535)),
                     w_addr=draw(st.integers(0, 2**32 - 1)), qp_addr=draw(st.integers(0, 2**32 - 1)))
        if op is Opcode.POOL:
            extra = {}
        return Instruction(op, kh=kh, kw=kw, stride=stride, pad_t=pads[0], pad_l=pads[1], pad_b=pads[2],
                           pad_r=pads[3], in_h=h, in_w=w, in_c=c, out_h=oh, out_w=ow, out_c=oc, **extra, **common)
    h, w = draw(_dims), draw(_dims)
    up = draw(st.sampled_from([1, 2])) if op is Opcode.MOVE else 1
    h, w = min(h, 4095 // up), min(w, 4095 // up)
    return Instruction(op, in_h=h, in_w=w, in_c=c, out_h=h * up, out_w=w * up, out_c=c, upsample=up,
                       shift_a=draw(st.integers(0, 31)), shift_b=draw(st.integers(0, 31)),
                       in2_signed=draw(st.booleans()), in2_addr=draw(st.integers(0, 2**32 - 1)), **common)


@given(instructions())
def test_instruction_round_trip(instr):
    data = instr.encode()
    assert len(data) == INSTR_BYTES
    assert Instruction.decode(data) == instr


@given(st.lists(instructions(), max_size=8), st.integers(0, 2**32 - 1))
def test_program_round_trip(instrs, config_hash):
    prog = encode_program(instrs, config_hash)
    header, decoded = decode_program(prog, expect_config_hash=config_hash)
    assert header.config_hash == config_hash
    body = instrs if instrs and instrs[-1].opcode is Opcode.END else [*instrs, Instruction(Opcode.END)]
    assert decoded == body


def _word(**fields) -> bytes:
    return INSTRUCTION_LAYOUT.encode(fields).to_bytes(INSTR_BYTES, "little")


@pytest.mark.parametrize(
    "data, message",
    [
        (_word(opcode=9), "illegal opcode 9"),
        (_word(opcode=1, dataflow=3), "illegal dataflow 3"),
        ((1 << 500).to_bytes(INSTR_BYTES, "little"), "reserved bits"),
        (b"\0" * 10, "expected 64 bytes, got 10"),
        (_word(opcode=1, kh=3, kw=3, stride=1, in_h=8, in_w=8, in_c=1, out_h=9, out_w=6, out_c=1, out_bits=8,
               strip_w=8, ic_tile=1, oc_tile=8), "output 9x6 does not match"),
        (_word(opcode=2, kh=2, kw=2, stride=3, in_h=8, in_w=8, in_c=1, out_h=3, out_w=3, out_c=1, out_bits=8),
         "stride must be 1 or 2"),
        (_word(opcode=3, in_h=4, in_w=4, in_c=2, out_h=4, out_w=4, out_c=2, out_bits=6), "out_bits must be 4 or 8"),
    ],
)
def test_malformed_instruction_gives_clear_error(data, message):
    with pytest.raises(IsaError, match=message):
        Instruction.decode(data, where="instruction 3")


def test_program_errors():
    prog = encode_program([], 0x1234)
    with pytest.raises(IsaError, match="config hash 0x00001234, the accelerator has 0x00000001"):
        decode_program(prog, expect_config_hash=1)
    with pytest.raises(IsaError, match="not a shiftpu program"):
        decode_program(b"\x01" + prog[1:])
    with pytest.raises(IsaError, match="truncated"):
        decode_program(prog[:-1])
    bad_version = bytearray(prog)
    bad_version[4] = 7
    with pytest.raises(IsaError, match="ISA version 7"):
        decode_program(bytes(bad_version))


# -- DDR layout -----------------------------------------------------------------------------------------


@given(st.integers(1, 40), st.integers(1, 9), st.integers(1, 9), st.sampled_from([32, 64, 128]), st.booleans())
def test_activation_layout_round_trip(c, h, w, bus, signed):
    cfg = AccelConfig(axi_data_bits=bus)
    rng = np.random.default_rng(c * 100 + h * 10 + w)
    t = rng.integers(-128, 128, size=(c, h, w)).astype(np.int8 if signed else np.int16)
    t = t if signed else (t + 128).astype(np.uint8)
    buf = layout.pack_activation(t, cfg)
    assert buf.size == layout.activation_bytes(c, h, w, cfg)
    assert np.array_equal(layout.unpack_activation(buf, c, h, w, signed, cfg), t)
    ci, yi, xi = c - 1, h - 1, w // 2
    assert buf[layout.activation_offset(ci, yi, xi, h, w, cfg)] == t.view(np.uint8)[ci, yi, xi]


@given(st.integers(1, 20), st.integers(1, 20), st.integers(1, 4), st.sampled_from(list(Dataflow)),
       st.sampled_from(list(numerics.WeightCode)), st.sampled_from([1, 4, 8]))
@settings(max_examples=60)
def test_weight_layout_round_trip(oc, ic, k, dataflow, code, pe_ic):
    cfg = AccelConfig(weight_code=code, pe_ic=pe_ic)
    icg = 1 if dataflow is Dataflow.DEPTHWISE else ic
    pool = numerics.SHIFT4_VALUES if code is numerics.WeightCode.SHIFT4 else numerics.two_term_values()
    w = np.random.default_rng(oc * ic).choice(pool, size=(oc, icg, k, k))
    buf = layout.pack_weights(w, dataflow, cfg)
    assert buf.size == layout.weight_bytes(oc, icg, k, k, dataflow, cfg)
    assert np.array_equal(layout.unpack_weights(buf, oc, icg, k, k, dataflow, cfg), w)


def test_weight_order_is_the_documented_one():
    cfg = AccelConfig(pe_oc=2, pe_px=2)
    w = np.zeros((2, 2, 1, 1), dtype=np.int64)
    w[1, 0] = 4  # oc 1, ic 0 -> code 3
    # PIXEL: [oc_blk][ic][ky][kx][oc_lane]: oc lane 1 of ic 0 is the 2nd code = high nibble of byte 0
    assert layout.pack_weights(w, Dataflow.PIXEL, cfg).tolist() == [0x30, 0x00]
    # INPUT_CHANNEL: [oc_blk][ic_grp][ky][kx][ic_lane][oc_lane]: (ic 0, oc 1) is again code index 1
    w[0, 1] = -1  # ic lane 1, oc lane 0 -> code index 2 -> low nibble of byte 1, code 9
    assert layout.pack_weights(w, Dataflow.INPUT_CHANNEL, cfg).tolist() == [0x30, 0x09]
    # PIXEL with 2 input-channel lanes per PE: the same order, with ic groups of pe_ic channels
    assert layout.pack_weights(w, Dataflow.PIXEL, cfg.with_(pe_ic=2)).tolist() == [0x30, 0x09]


def test_qparams_round_trip():
    cfg = AccelConfig()
    b, s = np.array([2**31 - 1, -(2**31), 5]), np.array([-128, 127, 0])
    buf = layout.pack_qparams(b, s, cfg)
    assert buf.size == layout.qparam_bytes(3, cfg) == 64
    rb, rs = layout.unpack_qparams(buf, 3)
    assert rb.tolist() == b.tolist() and rs.tolist() == s.tolist()


# -- register map and documentation -------------------------------------------------------------------


def test_register_map_is_consistent():
    offsets = [r.offset for r in REGISTERS]
    assert len(set(offsets)) == len(offsets)
    assert all(o % 4 == 0 for o in offsets)
    assert len({r.name for r in REGISTERS}) == len(REGISTERS)


def test_architecture_doc_tables_are_generated_from_code():
    doc = (ROOT / "docs" / "architecture.md").read_text()
    assert render(doc) == doc, "docs/architecture.md is stale: run `make docs`"


# -- packaging ------------------------------------------------------------------------------------------


def test_only_shiftpu_is_importable(tmp_path):
    code = (
        "import importlib\n"
        "import shiftpu.compiler, shiftpu.hw, shiftpu.sim, shiftpu.sw, shiftpu.boards\n"
        "for name in ('compiler', 'hw', 'sim', 'sw', 'boards'):\n"
        "    try:\n"
        "        importlib.import_module(name)\n"
        "    except ImportError:\n"
        "        continue\n"
        "    raise SystemExit(f'{name} is importable')\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
