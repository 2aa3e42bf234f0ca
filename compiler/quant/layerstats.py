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


def _out_size(x_shape: tuple[int, ...], geo: ConvGeometry) -> tuple[int, int]:
    """Output height and width of the convolution of an [N, C, H, W] input."""
    kh, kw = geo.kernel
    (sh, sw), (dh, dw) = geo.strides, geo.dilations
    t, left, b, r = geo.pads
    return ((x_shape[2] + t + b - dh * (kh - 1) - 1) // sh + 1, (x_shape[3] + left + r - dw * (kw - 1) - 1) // sw + 1)


def patch_rows(x: np.ndarray, geo: ConvGeometry, rows: np.ndarray) -> np.ndarray:
    """``patches(x, geo)[:, rows]`` without unfolding the rows not asked for (the same values)."""
    if x.ndim != 4:
        return x.reshape(-1, x.shape[-1])[rows].astype(np.float64)[None]
    _, c, _, _ = x.shape
    kh, kw = geo.kernel
    (sh, sw), (dh, dw) = geo.strides, geo.dilations
    t, left, b, r = geo.pads
    ho, wo = _out_size(x.shape, geo)
    xp = np.pad(x, ((0, 0), (0, 0), (t, b), (left, r)))
    sample, pos = np.divmod(np.asarray(rows, dtype=np.int64), ho * wo)
    oy, ox = np.divmod(pos, wo)
    ys = oy[:, None] * sh + np.arange(kh)[None, :] * dh  # [R, kh]
    xs = ox[:, None] * sw + np.arange(kw)[None, :] * dw  # [R, kw]
    got = xp[sample[:, None, None], :, ys[:, :, None], xs[:, None, :]]  # [R, kh, kw, C]
    g = geo.group
    got = got.reshape(len(sample), kh * kw, g, c // g).transpose(2, 0, 3, 1)  # [G, R, C/G, kh*kw]
    return got.reshape(g, len(sample), (c // g) * kh * kw).astype(np.float64)


def _patch_shape(x_shape: tuple[int, ...], geo: ConvGeometry) -> tuple[int, int, int]:
    """What ``patches`` gives for one sample of an input of this shape: groups, rows, values per row."""
    if len(x_shape) != 4:
        return 1, int(np.prod(x_shape[1:-1], dtype=np.int64)), int(x_shape[-1])
    ho, wo = _out_size(x_shape, geo)
    return geo.group, ho * wo, x_shape[1] // geo.group * geo.kernel[0] * geo.kernel[1]


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
        groups, per_sample, width = _patch_shape(xf.shape, geo)
        cost_per_row = 3 * groups * width**2
        target = min(MAX_ROWS, max(MIN_ROWS, MOMENT_BUDGET // cost_per_row))
        keep = min(1.0, target / (per_sample * len(xf)))
        step = max(1, CHUNK_VALUES // (groups * per_sample * width))
        sums: list[np.ndarray] | None = None
        buf: np.ndarray | None = None
        rows = 0
        for i in range(0, len(xf), step):
            if keep < 1.0:  # only the rows drawn are unfolded
                sel = np.flatnonzero(rng.random(per_sample * len(xf[i : i + step])) < keep)
                pf, pq = patch_rows(xf[i : i + step], geo, sel), patch_rows(xq[i : i + step], geo, sel)
            else:
                pf, pq = patches(xf[i : i + step], geo), patches(xq[i : i + step], geo)
            qt = pq.transpose(0, 2, 1)
            products = ((qt, pq), (qt, pf), (pf.transpose(0, 2, 1), pf))
            if sums is None:
                sums = [pq.sum(axis=1), pf.sum(axis=1), *(a @ b for a, b in products)]
            else:  # accumulated in place: the moment matrices of wide layers are large
                sums[0] += pq.sum(axis=1)
                sums[1] += pf.sum(axis=1)
                buf = np.empty_like(sums[2]) if buf is None else buf
                for acc, (a, b) in zip(sums[2:], products, strict=True):
                    acc += np.matmul(a, b, out=buf)
            rows += pf.shape[1]
        if sums is None or rows == 0:
            raise ValueError("no patch row was kept")
        for v in sums:
            v /= rows
        return cls(rows, *sums)

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

    def objective(self, w: np.ndarray, centred: bool,
                  error: OutputError | None = None) -> list[tuple[slice, np.ndarray, np.ndarray]]:
        """Per group the quadratic form of ``rounding.optimise_rounding`` for float weights ``w`` [C, n]:
        (channels, H [n, n], T [channels, n]); centred moments when a corrected bias absorbs the mean error.
        ``error`` (``error_of(w, ...)``) supplies E[x_q x_f^T] w already computed."""
        out = []
        for k, s in enumerate(self.groups(len(w))):
            qq = self.qq[k]
            if error is not None:
                t = error.cross[s]
                if centred:
                    t = t - np.outer(error.float_mean[s], self.mean_q[k])
            else:
                qf = self.qf[k] - np.outer(self.mean_q[k], self.mean_f[k]) if centred else self.qf[k]
                t = w[s] @ qf.T
            if centred:
                qq = qq - np.outer(self.mean_q[k], self.mean_q[k])
            out.append((s, qq, t))
        return out

    def output_mse(self, u: np.ndarray, bias_q: np.ndarray, w: np.ndarray, bias: np.ndarray) -> np.ndarray:
        """Per channel E[(u . x_q + bias_q - w . x_f - bias)^2] for real weights u, w [C, n]."""
        e = self._quad(u, self.qq, u) - 2 * self._quad(u, self.qf, w) + self._quad(w, self.ff, w)
        db = bias_q - bias
        e += 2 * db * (self._dot(u, self.mean_q) - self._dot(w, self.mean_f)) + db**2
        return np.maximum(e, 0.0)

    def error_of(self, w: np.ndarray, bias: np.ndarray) -> OutputError:
        """The layer output error of quantized weights against float weights ``w`` [C, n] and ``bias`` [C], with
        the terms that depend on ``w`` alone computed once (``output_mse`` for many quantized weights)."""
        return OutputError(self, w, bias)

    def output_energy(self, w: np.ndarray, bias: np.ndarray) -> np.ndarray:
        """Per channel E[(w . x_f + bias)^2], the float output's energy."""
        return self._quad(w, self.ff, w) + 2 * bias * self._dot(w, self.mean_f) + bias**2

    def corrected_bias(self, u: np.ndarray, w: np.ndarray, bias: np.ndarray) -> np.ndarray:
        """The bias that removes the mean output error of real weights u: bias + E[w . x_f] - E[u . x_q]."""
        return bias + self._dot(w, self.mean_f) - self._dot(u, self.mean_q)


class OutputError:
    """``LayerStats.output_mse`` against fixed float weights ``w`` and ``bias``: the float term E[(w . x_f)^2],
    E[x_q x_f^T] w and E[w . x_f] are computed once, so that each evaluation of quantized weights costs one
    product with E[x_q x_q^T] (restricted to the channels asked for)."""

    def __init__(self, stats: LayerStats, w: np.ndarray, bias: np.ndarray) -> None:
        self.stats = stats
        self.w = w
        self.bias = bias
        per = len(w) // len(stats.qq)
        #: the group of each output channel
        self.group = np.arange(len(w)) // per
        #: [C, n] row c: E[x_q x_f^T]_k w_c (k the channel's group), the cross term's vector
        self.cross = np.concatenate([w[s] @ qf.T for s, qf in zip(stats.groups(len(w)), stats.qf, strict=True)])
        #: [C] E[(w_c . x_f)^2] and E[w_c . x_f]
        self.float_term = stats._quad(w, stats.ff, w)
        self.float_mean = stats._dot(w, stats.mean_f)

    def energy(self) -> np.ndarray:
        """Per channel E[(w . x_f + bias)^2], the float output's energy."""
        return self.float_term + 2 * self.bias * self.float_mean + self.bias**2

    def terms(self, u: np.ndarray, rows: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """For real quantized weights ``u`` of the channels ``rows`` (all: None; u then [C, n], else
        [len(rows), n]): per channel E[(u . x_q - w . x_f)^2] and E[u . x_q]."""
        r = slice(None) if rows is None else np.asarray(rows)
        if len(self.stats.qq) == 1:
            quad = np.einsum("cn,cn->c", u @ self.stats.qq[0], u)
            mean = u @ self.stats.mean_q[0]
        else:
            quad = np.empty(len(u))
            mean = np.empty(len(u))
            groups = self.group[r]
            for k in np.unique(groups):
                at = np.flatnonzero(groups == k)
                uk = u[at]
                quad[at] = np.einsum("cn,cn->c", uk @ self.stats.qq[k], uk)
                mean[at] = uk @ self.stats.mean_q[k]
        quad = quad - 2 * np.einsum("cn,cn->c", u, self.cross[r]) + self.float_term[r]
        return quad, mean

    def mse(self, terms: tuple[np.ndarray, np.ndarray], bias_q: np.ndarray,
            rows: np.ndarray | None = None) -> np.ndarray:
        """Per channel E[(u . x_q + bias_q - w . x_f - bias)^2] from ``terms(u, rows)``."""
        r = slice(None) if rows is None else np.asarray(rows)
        quad, mean = terms
        db = bias_q - self.bias[r]
        return np.maximum(quad + 2 * db * (mean - self.float_mean[r]) + db**2, 0.0)

    def corrected_bias(self, terms: tuple[np.ndarray, np.ndarray], rows: np.ndarray | None = None) -> np.ndarray:
        """The bias that removes the mean output error (``LayerStats.corrected_bias``) from ``terms(u, rows)``."""
        r = slice(None) if rows is None else np.asarray(rows)
        return self.bias[r] + self.float_mean[r] - terms[1]
