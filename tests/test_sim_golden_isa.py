"""The golden model's ISA semantics against onnxruntime on hand-built QDQ graphs, and its error codes."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from onnx import TensorProto, helper, numpy_helper

from shiftpu.arch import layout
from shiftpu.arch.config import AccelConfig
from shiftpu.arch.isa import Dataflow, Instruction, Opcode, encode_program
from shiftpu.arch.numerics import SHIFT4_VALUES, Activation
from shiftpu.arch.regmap import ErrorCode
from shiftpu.sim.accelerator import Accelerator, AcceleratorError
from shiftpu.sim.golden import GoldenAccelerator

CFG = AccelConfig(pe_oc=4, pe_px=4, strip_width=16, axi_data_bits=64)


def _ort(model: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    sess = ort.InferenceSession(model.SerializeToString(), opts)
    return sess.run(None, {"x": x})[0]


def _qdq_conv_model(w, bias, x_exp, w_exp, y_exp, stride, pads, groups, act, leaky_shift, x_signed, y_signed):
    oc = w.shape[0]
    x_t = TensorProto.INT8 if x_signed else TensorProto.UINT8
    y_t = TensorProto.INT8 if y_signed else TensorProto.UINT8
    inits = [
        numpy_helper.from_array(w.astype(np.int8), "w_q"),
        numpy_helper.from_array((2.0 ** w_exp).astype(np.float32), "w_s"),
        numpy_helper.from_array(np.zeros(oc, np.int8), "w_z"),
        numpy_helper.from_array(bias.astype(np.int32), "b_q"),
        numpy_helper.from_array((2.0 ** (w_exp + x_exp)).astype(np.float32), "b_s"),
        numpy_helper.from_array(np.zeros(oc, np.int32), "b_z"),
        numpy_helper.from_array(np.array(2.0**y_exp, np.float32), "y_s"),
        numpy_helper.from_array(np.array(0, np.int8 if y_signed else np.uint8), "y_z"),
        numpy_helper.from_array(np.array(2.0**x_exp, np.float32), "x_s"),
    ]
    nodes = [
        helper.make_node("DequantizeLinear", ["x", "x_s"], ["xf"]),
        helper.make_node("DequantizeLinear", ["w_q", "w_s", "w_z"], ["wf"], axis=0),
        helper.make_node("DequantizeLinear", ["b_q", "b_s", "b_z"], ["bf"], axis=0),
        helper.make_node("Conv", ["xf", "wf", "bf"], ["c"], strides=[stride, stride], pads=pads, group=groups),
    ]
    last = "c"
    if act is Activation.RELU:
        nodes.append(helper.make_node("Relu", ["c"], ["a"]))
        last = "a"
    elif act is Activation.LEAKY:
        nodes.append(helper.make_node("LeakyRelu", ["c"], ["a"], alpha=2.0**-leaky_shift))
        last = "a"
    nodes.append(helper.make_node("QuantizeLinear", [last, "y_s", "y_z"], ["y"]))
    graph = helper.make_graph(nodes, "conv", [helper.make_tensor_value_info("x", x_t, None)],
                              [helper.make_tensor_value_info("y", y_t, None)], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 19)])


@st.composite
def conv_cases(draw):
    depthwise = draw(st.booleans())
    c_in = draw(st.integers(1, 12))
    c_out = c_in if depthwise else draw(st.integers(1, 12))
    kh, kw = draw(st.integers(1, 5)), draw(st.integers(1, 5))
    stride = draw(st.integers(1, 2))
    pads = [draw(st.integers(0, k - 1)) for k in (kh, kw, kh, kw)]
    h = draw(st.integers(max(1, kh - pads[0] - pads[2]), 12))
    w = draw(st.integers(max(1, kw - pads[1] - pads[3]), 12))
    seed = draw(st.integers(0, 2**31))
    act = draw(st.sampled_from(list(Activation)))
    return depthwise, c_in, c_out, kh, kw, stride, pads, h, w, seed, act, draw(st.booleans()), draw(st.booleans())


@settings(max_examples=60, deadline=None)
@given(conv_cases())
def test_conv_matches_onnxruntime(case):
    depthwise, c_in, c_out, kh, kw, stride, pads, h, w, seed, act, x_signed, y_signed = case
    rng = np.random.default_rng(seed)
    print(f"seed={seed}")
    icg = 1 if depthwise else c_in
    wq = rng.choice(SHIFT4_VALUES, size=(c_out, icg, kh, kw))
    bias = rng.integers(-2000, 2000, size=c_out)
    x_exp, w_exp = -4, rng.integers(-8, -3, size=c_out)
    shift = rng.integers(0, 7, size=c_out)
    y_exp = int(x_exp + w_exp[0] + shift[0])
    shift = y_exp - x_exp - w_exp  # per-channel right shift
    x = (rng.integers(-128, 128, size=(1, c_in, h, w)) if x_signed else rng.integers(0, 256, size=(1, c_in, h, w)))
    x = x.astype(np.int8 if x_signed else np.uint8)
    model = _qdq_conv_model(wq, bias, x_exp, w_exp, y_exp, stride, pads, c_in if depthwise else 1, act, 3,
                            x_signed, y_signed)
    ref = _ort(model, x)[0]

    oh = (h + pads[0] + pads[2] - kh) // stride + 1
    ow = (w + pads[1] + pads[3] - kw) // stride + 1
    dataflow = Dataflow.DEPTHWISE if depthwise else Dataflow(seed % 2)
    wbytes = layout.pack_weights(wq, dataflow, CFG)
    qp = layout.pack_qparams(bias, shift, CFG)
    instr = Instruction(
        Opcode.CONV, dataflow=dataflow, depthwise=depthwise, act=act, leaky_shift=3, in_signed=x_signed,
        out_signed=y_signed, kh=kh, kw=kw, stride=stride, pad_t=pads[0], pad_l=pads[1], pad_b=pads[2], pad_r=pads[3],
        in_h=h, in_w=w, in_c=c_in, out_h=oh, out_w=ow, out_c=c_out, strip_w=min(ow, 8), ic_tile=CFG.channel_block,
        oc_tile=CFG.channel_block if depthwise else 4, in_addr=0, out_addr=layout.align(layout.activation_bytes(c_in, h, w, CFG)),
        w_addr=1024, qp_addr=1024 + layout.align(wbytes.size),
    )
    prog = encode_program([instr], CFG.config_hash())
    const = np.zeros(instr.qp_addr + qp.size, np.uint8)
    const[: len(prog)] = np.frombuffer(prog, np.uint8)
    const[instr.w_addr: instr.w_addr + wbytes.size] = wbytes
    const[instr.qp_addr: instr.qp_addr + qp.size] = qp
    act_mem = np.zeros(instr.out_addr + layout.activation_bytes(c_out, oh, ow, CFG), np.uint8)
    act_mem[: layout.activation_bytes(c_in, h, w, CFG)] = layout.pack_activation(x[0], CFG)
    stats = GoldenAccelerator(CFG).run_program(const, act_mem)
    assert stats.instructions == 2 and not stats.measured
    got = layout.unpack_activation(act_mem[instr.out_addr:], c_out, oh, ow, y_signed, CFG)
    assert np.array_equal(got, ref)


def _program(*instrs, config=CFG) -> np.ndarray:
    return np.frombuffer(encode_program(list(instrs), config.config_hash()), np.uint8).copy()


def test_golden_is_an_accelerator():
    assert isinstance(GoldenAccelerator(CFG), Accelerator)


def test_pool_add_move_semantics():
    x = np.arange(-8, 8, dtype=np.int8).reshape(1, 4, 4)
    b = np.full((1, 4, 4), 3, dtype=np.int8)
    n = layout.activation_bytes(1, 4, 4, CFG)
    act = np.zeros(2048, np.uint8)
    act[:n] = layout.pack_activation(x, CFG)
    act[256: 256 + n] = layout.pack_activation(b, CFG)
    common = dict(in_c=1, out_c=1, in_signed=True, out_signed=True, out_bits=8)
    pool = Instruction(Opcode.POOL, kh=2, kw=2, stride=2, in_h=4, in_w=4, out_h=2, out_w=2, in_addr=0, out_addr=512,
                       **common)
    add = Instruction(Opcode.ADD, in_h=4, in_w=4, out_h=4, out_w=4, in_addr=0, in2_addr=256, out_addr=768,
                      shift_a=1, out_shift=1, act=Activation.RELU, **common)
    move = Instruction(Opcode.MOVE, in_h=2, in_w=2, out_h=4, out_w=4, upsample=2, in_addr=512, out_addr=1024,
                       out_shift=-1, **common)
    GoldenAccelerator(CFG).run_program(_program(pool, add, move), act)
    assert layout.unpack_activation(act[512:], 1, 2, 2, True, CFG)[0].tolist() == [[-3, -1], [5, 7]]
    # (2x + 3) / 2, half to even, ReLU
    expect = np.maximum(np.round((2 * x.astype(np.int64) + 3) / 2), 0)
    assert np.array_equal(layout.unpack_activation(act[768:], 1, 4, 4, True, CFG), expect)
    up = layout.unpack_activation(act[1024:], 1, 4, 4, True, CFG)[0]
    assert up.tolist() == [[-6, -6, -2, -2], [-6, -6, -2, -2], [10, 10, 14, 14], [10, 10, 14, 14]]


@pytest.mark.parametrize(
    "mutate, code",
    [
        (lambda p: p.__setitem__(0, 0), ErrorCode.BAD_MAGIC),
        (lambda p: p.__setitem__(4, 9), ErrorCode.ISA_VERSION),
        (lambda p: p.__setitem__(8, p[8] ^ 1), ErrorCode.CONFIG_HASH),
        (lambda p: p.__setitem__(64, 0x0B), ErrorCode.ILLEGAL_OPCODE),
        (lambda p: p.__setitem__(12, 1), ErrorCode.NO_END),  # n_instr = 1: only the MOVE runs
    ],
)
def test_error_codes(mutate, code):
    move = Instruction(Opcode.MOVE, in_h=1, in_w=1, in_c=1, out_h=1, out_w=1, out_c=1, out_addr=64)
    prog = _program(move)
    mutate(prog)
    with pytest.raises(AcceleratorError) as err:
        GoldenAccelerator(CFG).run_program(prog, np.zeros(256, np.uint8))
    assert err.value.code is code


def test_capacity_violation_is_bad_field():
    conv = Instruction(Opcode.CONV, kh=1, kw=1, in_h=1, in_w=64, in_c=1, out_h=1, out_w=64, out_c=4, strip_w=32,
                       ic_tile=1, oc_tile=4)
    with pytest.raises(AcceleratorError, match="strip_w 32 exceeds strip_width 16") as err:
        GoldenAccelerator(CFG).run_program(_program(conv), np.zeros(4096, np.uint8))
    assert err.value.code is ErrorCode.BAD_FIELD


_WIDE_PE = AccelConfig(pe_oc=16, pe_px=16, strip_width=16, axi_data_bits=64)


@pytest.mark.parametrize("config, fields, message", [
    (CFG, dict(in_c=1, out_w=13, in_w=13, out_c=132, strip_w=13, ic_tile=1, oc_tile=132),
     "accumulator buffer needs 2112 words, has 2048"),
    (CFG, dict(in_c=12, out_w=8, in_w=8, out_c=4, strip_w=8, ic_tile=4, oc_tile=4),
     "ic_tile 4 with several input tiles is not a multiple of channel_block 8"),
    (CFG, dict(in_c=12, out_w=8, in_w=8, out_c=12, strip_w=8, ic_tile=4, oc_tile=4, depthwise=True,
               dataflow=Dataflow.DEPTHWISE), "ic_tile 4 with several input tiles is not a multiple of channel_block 8"),
    (_WIDE_PE, dict(in_c=8, out_w=8, in_w=8, out_c=16, strip_w=8, ic_tile=8, oc_tile=16,
                    dataflow=Dataflow.INPUT_CHANNEL), "INPUT_CHANNEL needs pe_px 16 <= channel_block 8"),
    (_WIDE_PE, dict(in_c=16, out_w=8, in_w=8, out_c=16, strip_w=8, ic_tile=16, oc_tile=16, depthwise=True,
                    dataflow=Dataflow.DEPTHWISE), "DEPTHWISE needs pe_oc 16 <= channel_block 8"),
])
def test_tiling_rules_are_bad_field(config, fields, message):
    conv = Instruction(Opcode.CONV, kh=1, kw=1, in_h=1, out_h=1, **fields)
    with pytest.raises(AcceleratorError, match=message) as err:
        GoldenAccelerator(config).run_program(_program(conv, config=config), np.zeros(1 << 16, np.uint8))
    assert err.value.code is ErrorCode.BAD_FIELD


def test_out_of_segment_access_is_axi_error():
    move = Instruction(Opcode.MOVE, in_h=4, in_w=4, in_c=1, out_h=4, out_w=4, out_c=1, out_addr=4096)
    with pytest.raises(AcceleratorError) as err:
        GoldenAccelerator(CFG).run_program(_program(move), np.zeros(256, np.uint8))
    assert err.value.code is ErrorCode.AXI_WRITE
