"""One call that turns an ordinary PyTorch model into a shift quantization-aware one.

``prepare_qat`` traces the model with torch.fx, folds each BatchNorm2d into the Conv2d before it, swaps
Conv2d/Linear for QConv2d/QLinear, and puts an ActQuant after the input and after every value-producing
operation (convolution, linear, add, concat, global average pooling), behind its ReLU/LeakyReLU when one
follows. Max pooling, flatten, nearest upsampling and dropout keep their input's scale, exactly as the exported
graph does. A LeakyReLU slope that is not 2^-k is rounded to the nearest 2^-k (as ``shiftpu quantize`` does), so
that the model trains with the slope the fabric runs.
"""

from __future__ import annotations

import copy
import itertools
from collections.abc import Iterator
from dataclasses import dataclass

from torch import fx, nn

from shiftpu.arch.numerics import ActFormat, WeightCode
from shiftpu.compiler.quant.activations import LeakySlope, leaky_shift_of, rounded_leaky_shift
from shiftpu.compiler.quant.fxops import ACTIVATIONS, NON_NEGATIVE, PASS_THROUGH, PRODUCERS, FxOp, classify, describe
from shiftpu.compiler.quant.qat import ActQuant, QatError, QConv2d, QLinear, ScaleMode


@dataclass(frozen=True)
class QatOptions:
    """How a model is shift-quantized."""

    #: Weight coding: one-term shift codes (0, +-2^e) or two-term codes (+-2^e1 +- 2^e2).
    weight_code: WeightCode = WeightCode.SHIFT4
    #: Activation width in bits: 8, or 4 for the narrow option.
    act_bits: int = 8
    #: Whether the model input can be negative (int8); False quantizes it as uint8 (e.g. images in [0, 1]).
    input_signed: bool = True
    #: Calibrated (running maximum) or learned power-of-two activation scales.
    scale_mode: ScaleMode = ScaleMode.CALIBRATED
    #: LeakyReLU slopes that are not 2^-k: rounded to the nearest 2^-k before training, or kept (then the
    #: export refuses them: the quantized form has no float activation).
    leaky_slope: LeakySlope = LeakySlope.ROUND


def _round_leaky_slopes(gm: fx.GraphModule, modules: dict[str, nn.Module]) -> None:
    """Every LeakyReLU slope that is not 2^-k (1 <= k <= 15) replaced by the nearest 2^-k."""
    for node in gm.graph.nodes:
        if classify(node, modules) is not FxOp.LEAKY_RELU:
            continue
        if node.op == "call_module":
            mod = modules[node.target]
            slope = float(mod.negative_slope)
        else:
            slope = float(node.args[1] if len(node.args) > 1 else node.kwargs.get("negative_slope", 0.01))
        k = rounded_leaky_shift(slope)
        if leaky_shift_of(slope) is not None or k is None:
            continue
        if node.op == "call_module":
            rounded = nn.LeakyReLU(2.0**-k, inplace=mod.inplace)
            gm.add_submodule(node.target, rounded)
            modules[node.target] = rounded
        elif len(node.args) > 1:
            node.args = (node.args[0], 2.0**-k, *node.args[2:])
        else:
            node.kwargs = {**node.kwargs, "negative_slope": 2.0**-k}


def _fold_batchnorms(gm: fx.GraphModule, modules: dict[str, nn.Module], options: QatOptions) -> None:
    for node in list(gm.graph.nodes):
        op = classify(node, modules)
        if op not in (FxOp.CONV, FxOp.LINEAR):
            continue
        bn_node = None
        users = list(node.users)
        if op is FxOp.CONV and len(users) == 1 and classify(users[0], modules) is FxOp.BATCHNORM:
            bn_node = users[0]
        if op is FxOp.CONV:
            bn = copy.deepcopy(modules[bn_node.target]) if bn_node is not None else None
            new = QConv2d(modules[node.target], bn, options.weight_code)
        else:
            new = QLinear(modules[node.target], options.weight_code)
        gm.add_submodule(node.target, new)
        modules[node.target] = new
        if bn_node is not None:
            bn_node.replace_all_uses_with(node)
            gm.graph.erase_node(bn_node)


def _insert_quant(gm: fx.GraphModule, modules: dict[str, nn.Module], after: fx.Node, fmt: ActFormat,
                  options: QatOptions, names: Iterator[str]) -> None:
    name = next(names)
    quant = ActQuant(fmt, options.scale_mode)
    gm.add_submodule(name, quant)
    modules[name] = quant
    with gm.graph.inserting_after(after):
        qnode = gm.graph.call_module(name, (after,))
    after.replace_all_uses_with(qnode, delete_user_cb=lambda user: user is not qnode)


def _non_negative(node: fx.Node, modules: dict[str, nn.Module]) -> bool:
    """Whether a quantized value is unsigned (looking back through pass-through operations)."""
    while classify(node, modules) in PASS_THROUGH:
        node = node.args[0]
    return classify(node, modules) is FxOp.ACT_QUANT and not modules[node.target].fmt.signed


def _quant_point(node: fx.Node, modules: dict[str, nn.Module]) -> tuple[fx.Node, bool]:
    """Where the quantizer after a producer goes, and whether the value there is non-negative."""
    users = list(node.users)
    if len(users) == 1 and classify(users[0], modules) in ACTIVATIONS:
        return users[0], classify(users[0], modules) in NON_NEGATIVE
    if classify(node, modules) is FxOp.CONCAT:
        return node, all(_non_negative(a, modules) for a in node.args[0])
    if classify(node, modules) is FxOp.MEAN:
        return node, _non_negative(node.args[0], modules)
    return node, False


def _source_quant(node: fx.Node, modules: dict[str, nn.Module]) -> ActQuant:
    """The ActQuant that defines the scale of a layer input (looking back through pass-through operations)."""
    cur = node
    while True:
        op = classify(cur, modules)
        if op is FxOp.ACT_QUANT:
            return modules[cur.target]
        if op not in PASS_THROUGH:
            raise QatError(f"the input of a shift layer comes from {describe(cur)}, which is not quantized")
        cur = cur.args[0]


def prepare_qat(model: nn.Module, options: QatOptions | None = None) -> fx.GraphModule:
    """A traced copy of ``model`` ready for shift quantization-aware training (the original is not changed)."""
    options = options or QatOptions()
    try:
        gm = fx.symbolic_trace(copy.deepcopy(model))
    except Exception as e:  # tracing failures come in many exception types
        raise QatError(f"the model cannot be traced by torch.fx: {e}") from e
    modules = dict(gm.named_modules())
    if options.leaky_slope is LeakySlope.ROUND:
        _round_leaky_slopes(gm, modules)
    _fold_batchnorms(gm, modules, options)
    for node in gm.graph.nodes:
        if classify(node, modules) is FxOp.BATCHNORM:
            raise QatError(f"BatchNorm {describe(node)} does not follow a convolution and cannot be folded")
    counter = (f"act_quant_{i}" for i in itertools.count())
    for node in list(gm.graph.nodes):
        op = classify(node, modules)
        if op is FxOp.INPUT:
            _insert_quant(gm, modules, node, ActFormat(options.act_bits, options.input_signed), options, counter)
        elif op in PRODUCERS:
            point, non_negative = _quant_point(node, modules)
            _insert_quant(gm, modules, point, ActFormat(options.act_bits, not non_negative), options, counter)
    if not any(isinstance(m, (QConv2d, QLinear)) for m in modules.values()):
        raise QatError("the model has no Conv2d or Linear layer to quantize")
    for node in gm.graph.nodes:
        if classify(node, modules) in (FxOp.QCONV, FxOp.QLINEAR):
            modules[node.target]._link_input(_source_quant(node.args[0], modules))
    gm.graph.lint()
    gm.delete_all_unused_submodules()
    gm.recompile()
    return gm
