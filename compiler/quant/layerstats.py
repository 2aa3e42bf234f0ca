"""Second-order statistics of a layer's input on calibration data, and the layer output error they give.

A Conv or Gemm output is a dot product of each output channel's weights with an input patch (a row of the
input unfolded by im2col). From the patches of the float model's input ``x_f`` and of the quantized model's
input ``x_q`` at the same positions, ``LayerStats`` keeps per group the means and the moment matrices
``E[x_q x_q^T]``, ``E[x_q x_f^T]``, ``E[x_f x_f^T]``; with them the mean squared error of the layer's
(pre-activation) output for any quantized weights and bias is a closed form, without running the model again.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

#: Patch rows kept per layer (a seeded random subset of output positions beyond that) ...
MAX_ROWS = 1 << 14
#: ... and fewer for wide layers, so that the three moment matrices cost at most about this many multiply-adds
#: (never fewer than MIN_ROWS rows).
MOMENT_BUDGET = 100_000_000_000
MIN_ROWS = 1024
#: Patch values unfolded at a time (float64), bounding the memory im2col takes.
CHUNK_VALUES = 1 << 22


@dataclass(frozen=True)
class ConvGeometry:
    """What im2col needs of a Conv node (a Gemm is a 1x1 convolution of a 1x1 map)."""

    kernel: tuple[int, int] = (1, 1)
    strides: tuple[int, int] = (1, 1)
    pads: tuple[int, int, int, int] = (0, 0, 0, 0)  #: top, left, bottom, right
    dilations: tuple[int, int] = (1, 1)
    group: int = 1


def patches(x: np.ndarray, geo: ConvGeometry) -> np.ndarray:
    """Input unfolded to [group, rows, C/group * kh * kw] (the weight layout of each output channel)."""
    if x.ndim != 4:  # a Gemm's input: each row is a patch
        return x.reshape(-1, x.shape[-1]).astype(np.float64)[None]
    n, c, _, _ = x.shape
    kh, kw = geo.kernel
    (sh, sw), (dh, dw) = geo.strides, geo.dilations
    t, left, b, r = geo.pads
    xp = np.pad(x.astype(np.float64), ((0, 0), (0, 0), (t, b), (left, r)))
    ho = (xp.shape[2] - dh * (kh - 1) - 1) // sh + 1
    wo = (xp.shape[3] - dw * (kw - 1) - 1) // sw + 1
    cols = [xp[:, :, i * dh : i * dh + sh * (ho - 1) + 1 : sh, j * dw : j * dw + sw * (wo - 1) + 1 : sw]
            for i in range(kh) for j in range(kw)]
    stacked = np.stack(cols, axis=2)  # [N, C, kh*kw, Ho, Wo]
    g = geo.group
    stacked = stacked.reshape(n, g, c // g, kh * kw, ho, wo).transpose(1, 0, 4, 5, 2, 3)
    return stacked.reshape(g, n * ho * wo, (c // g) * kh * kw)


@dataclass
class LayerStats:
    """Accumulated patch moments of one layer (per group), from paired float and quantized inputs."""

    rows: int
    mean_q: np.ndarray  #: [G, n]
    mean_f: np.ndarray  #: [G, n]
    qq: np.ndarray  #: [G, n, n] E[x_q x_q^T]
    qf: np.ndarray  #: [G, n, n] E[x_q x_f^T]
    ff: np.ndarray  #: [G, n, n] E[x_f x_f^T]

    @classmethod
    def collect(cls, xf: np.ndarray, xq: np.ndarray, geo: ConvGeometry, rng: np.random.Generator) -> LayerStats:
        """Moments of the patches of the float input ``xf`` and quantized input ``xq`` (same samples); beyond
        MAX_ROWS patch rows (fewer for wide layers, MOMENT_BUDGET), a random subset of rows drawn from ``rng``
        (the same rows of both)."""
        if len(xf) != len(xq) or len(xf) == 0:
            raise ValueError(f"{len(xf)} float and {len(xq)} quantized input samples: need the same, at least one")
        one = patches(xf[:1], geo)
        cost_per_row = 3 * one.shape[0] * one.shape[2] ** 2
        target = min(MAX_ROWS, max(MIN_ROWS, MOMENT_BUDGET // cost_per_row))
        keep = min(1.0, target / (one.shape[1] * len(xf)))
        step = max(1, CHUNK_VALUES // one.size)
        sums: list[np.ndarray] | None = None
        rows = 0
        for i in range(0, len(xf), step):
            pf, pq = patches(xf[i : i + step], geo), patches(xq[i : i + step], geo)
            if keep < 1.0:
                sel = np.flatnonzero(rng.random(pf.shape[1]) < keep)
                pf, pq = pf[:, sel], pq[:, sel]
            qt = pq.transpose(0, 2, 1)
            part = [pq.sum(axis=1), pf.sum(axis=1), qt @ pq, qt @ pf, pf.transpose(0, 2, 1) @ pf]
            sums = part if sums is None else [a + b for a, b in zip(sums, part, strict=True)]
            rows += pf.shape[1]
        if sums is None or rows == 0:
            raise ValueError("no patch row was kept")
        return cls(rows, *(v / rows for v in sums))

    def groups(self, channels: int) -> list[slice]:
        """The output channels of each group, for ``channels`` output channels."""
        per = channels // len(self.qq)
        return [slice(k * per, (k + 1) * per) for k in range(len(self.qq))]

    def _quad(self, a: np.ndarray, m: np.ndarray, b: np.ndarray) -> np.ndarray:
        """Per channel c of group k: a_c^T m_k b_c."""
        return np.concatenate([np.einsum("cn,cn->c", a[s] @ mk, b[s]) for s, mk in zip(self.groups(len(a)), m,
                                                                                         strict=True)])

    def _dot(self, a: np.ndarray, v: np.ndarray) -> np.ndarray:
        """Per channel c of group k: a_c . v_k."""
        return np.concatenate([a[s] @ vk for s, vk in zip(self.groups(len(a)), v, strict=True)])

    def objective(self, w: np.ndarray, centred: bool) -> list[tuple[slice, np.ndarray, np.ndarray]]:
        """Per group the quadratic form of ``rounding.optimise_rounding`` for float weights ``w`` [C, n]:
        (channels, H [n, n], T [channels, n]); centred moments when a corrected bias absorbs the mean error."""
        out = []
        for k, s in enumerate(self.groups(len(w))):
            qq, qf = self.qq[k], self.qf[k]
            if centred:
                qq = qq - np.outer(self.mean_q[k], self.mean_q[k])
                qf = qf - np.outer(self.mean_q[k], self.mean_f[k])
            out.append((s, qq, w[s] @ qf.T))
        return out

    def output_mse(self, u: np.ndarray, bias_q: np.ndarray, w: np.ndarray, bias: np.ndarray) -> np.ndarray:
        """Per channel E[(u . x_q + bias_q - w . x_f - bias)^2] for real weights u, w [C, n]."""
        e = self._quad(u, self.qq, u) - 2 * self._quad(u, self.qf, w) + self._quad(w, self.ff, w)
        db = bias_q - bias
        e += 2 * db * (self._dot(u, self.mean_q) - self._dot(w, self.mean_f)) + db**2
        return np.maximum(e, 0.0)

    def output_energy(self, w: np.ndarray, bias: np.ndarray) -> np.ndarray:
        """Per channel E[(w . x_f + bias)^2], the float output's energy."""
        return self._quad(w, self.ff, w) + 2 * bias * self._dot(w, self.mean_f) + bias**2

    def corrected_bias(self, u: np.ndarray, w: np.ndarray, bias: np.ndarray) -> np.ndarray:
        """The bias that removes the mean output error of real weights u: bias + E[w . x_f] - E[u . x_q]."""
        return bias + self._dot(w, self.mean_f) - self._dot(u, self.mean_q)
