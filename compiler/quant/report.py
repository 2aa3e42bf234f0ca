"""The post-training quantization report: error per layer (SQNR), what each calibration-driven method
gained, and what stayed float, and why."""

from __future__ import annotations

from dataclasses import dataclass, field

from shiftpu.arch.numerics import ActFormat
from shiftpu.compiler.quant.slopes import SlopeReport


@dataclass(frozen=True)
class LayerReport:
    """Quantization of one weighted layer, measured on the calibration data."""

    name: str
    op_type: str
    weight_sqnr_db: float  #: weights vs their shift-quantized values
    output_sqnr_db: float  #: the float model's layer output vs the quantized model's (errors accumulated)
    out_exponent: int
    out_fmt: ActFormat
    activation: str  #: the fused activation ("none", "relu", "leaky", "relu6", "clip")
    #: (method, SQNR in dB of the layer's pre-activation output on the calibration data after it), in the
    #: order applied, starting with "nearest" (empty when no calibration-driven method ran)
    steps: tuple[tuple[str, float], ...] = ()
    #: the float model's layer input vs the quantized model's: output minus input SQNR is what the layer loses
    input_sqnr_db: float = float("nan")


@dataclass(frozen=True)
class MethodStep:
    """One model-level method tried on one place of the model (an equalised layer pair, a re-estimated
    BatchNormalization): the SQNR in dB before and after it, and whether it was kept (only when it helped)."""

    name: str
    before_db: float
    after_db: float
    kept: bool
    note: str = ""  #: why it was not tried, when it was not


@dataclass(frozen=True)
class FloatNode:
    """A node left in float: it runs on the CPU."""

    name: str
    op_type: str
    reason: str


@dataclass
class PtqReport:
    """What ``quantize_model`` did."""

    n_calibration: int
    layers: list[LayerReport] = field(default_factory=list)
    float_nodes: list[FloatNode] = field(default_factory=list)
    output_sqnr_db: dict[str, float] = field(default_factory=dict)
    #: cross-layer equalisation per pair: model output SQNR of the fast quantization before and after
    equalisation: list[MethodStep] = field(default_factory=list)
    #: re-estimated float BatchNormalizations: their output SQNR on the quantized model before and after
    bn_reestimation: list[MethodStep] = field(default_factory=list)
    seed: int = 0
    #: LeakyReLU slopes rounded to powers of two, and the change of the float model's outputs (None: not asked)
    slopes: SlopeReport | None = None

    def lines(self) -> list[str]:
        out = [f"shift-quantized {len(self.layers)} layer(s); SQNR measured on {self.n_calibration} calibration "
               "sample(s), in dB (higher is better)",
               f"{'layer':<28} {'op':<5} {'act':<6} {'out format':<11} {'scale':>7} {'weight SQNR':>12} {'output SQNR':>12}"]
        for r in self.layers:
            fmt = f"{'int' if r.out_fmt.signed else 'uint'}{r.out_fmt.bits}"
            out.append(f"{r.name[:28]:<28} {r.op_type:<5} {r.activation:<6} {fmt:<11} {'2^' + str(r.out_exponent):>7} "
                       f"{r.weight_sqnr_db:>9.1f} dB {r.output_sqnr_db:>9.1f} dB")
        for name, v in self.output_sqnr_db.items():
            out.append(f"model output {name!r}: SQNR {v:.1f} dB (measured)")
        if self.slopes is not None:
            out += self.slopes.lines()
        out += self.method_lines()
        if self.float_nodes:
            out.append(f"{len(self.float_nodes)} node(s) stayed float (run on the CPU):")
            out += [f"  {f.name} ({f.op_type}): {f.reason}" for f in self.float_nodes]
        else:
            out.append("no node stayed float")
        return out

    def method_lines(self) -> list[str]:
        """What each calibration-driven method gained (empty when none ran)."""
        out: list[str] = []
        stepped = [r for r in self.layers if r.steps]
        if stepped:
            names = [n for n, _ in stepped[0].steps]
            out.append(f"calibration-driven methods (seed {self.seed}): SQNR of each layer's pre-activation output "
                       "on the calibration data after each method, in dB (measured)")
            out.append(f"{'layer':<28} " + " ".join(f"{n:>15}" for n in names) + f" {'gain':>8}")
            for r in stepped:
                values = [v for _, v in r.steps]
                out.append(f"{r.name[:28]:<28} " + " ".join(f"{v:>12.1f} dB" for v in values)
                           + f" {values[-1] - values[0]:>+5.1f} dB")
        for title, steps, what in (("cross-layer equalisation", self.equalisation, "model output SQNR (fast PTQ)"),
                                   ("BatchNormalization re-estimation", self.bn_reestimation, "output SQNR")):
            for st in steps:
                if st.note:
                    out.append(f"{title} {st.name}: {st.note}")
                    continue
                verdict = "kept" if st.kept else "not kept (no gain)"
                out.append(f"{title} {st.name}: {what} {st.before_db:.1f} -> {st.after_db:.1f} dB, {verdict}")
        return out
