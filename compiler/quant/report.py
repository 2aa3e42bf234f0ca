"""The post-training quantization report: error per layer (SQNR) and what stayed float, and why."""

from __future__ import annotations

from dataclasses import dataclass, field

from shiftpu.arch.numerics import ActFormat


@dataclass(frozen=True)
class LayerReport:
    """Quantization of one weighted layer, measured on the calibration data."""

    name: str
    op_type: str
    weight_sqnr_db: float  #: weights vs their shift-quantized values
    output_sqnr_db: float  #: the float model's layer output vs the quantized model's (errors accumulated)
    out_exponent: int
    out_fmt: ActFormat
    activation: str  #: the fused activation ("none", "relu", "leaky")


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
        if self.float_nodes:
            out.append(f"{len(self.float_nodes)} node(s) stayed float (run on the CPU):")
            out += [f"  {f.name} ({f.op_type}): {f.reason}" for f in self.float_nodes]
        else:
            out.append("no node stayed float")
        return out
