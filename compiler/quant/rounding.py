"""Shift-weight rounding chosen on calibration data: which power of two each weight takes.

The error of a linear layer's (pre-activation) output over the calibration data is a quadratic form in the
quantized weights. For one output channel with float weights ``w``, quantized real weights ``u`` (the shift
levels times the channel's power-of-two scale) and inputs ``x_f`` (float model) and ``x_q`` (quantized model):

    E[(u . x_q - w . x_f)^2] = u^T H u - 2 u^T t + const,   H = E[x_q x_q^T],  t = E[x_q x_f^T] w

(with bias correction the moments are centred: the corrected bias absorbs the mean error). Each weight may
take three values: the shift level just below it, the one just above it, or zero (AdaRound's choice between
rounding down and up, on the power-of-two grid, plus pruning). ``optimise_rounding`` chooses them in three
stages, each of which only accepts a lower error:

1. AdaRound's relaxation (Nagel et al., ICML 2020): each weight becomes ``down + h (up - down)`` with h in
   [0, 1]; Adam minimises the channel's normalised error plus ``lambda * sum(1 - |2h - 1|^beta)``, the
   regulariser that drives h to 0 or 1 as beta is annealed from 20 to 2 after a warm-up; h is then rounded.
   Skipped for layers too large for SOFT_BUDGET.
2. Coordinate descent on the exact objective, from the relaxation's result and from round-to-nearest: a sweep
   visits every weight (in an order drawn from the seed) and gives it whichever of its three values lowers
   the channel's error most, all channels at once; sweeps repeat until none changes a weight. Per channel the
   better of the two results is kept.
3. For small layers (PAIR_MOVE_BUDGET), pair moves: two weights of a channel changed together (all 3 x 3
   combinations), then single moves again, until neither helps.

The result is never worse than round-to-nearest: the descent from it only accepts moves that lower the error.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from shiftpu.compiler.quant.weights import nearest_level

#: Adam steps of the relaxation (fewer for large layers, see SOFT_BUDGET).
SOFT_STEPS = 300
#: Multiply-adds the relaxation may spend on one layer (steps x channels x inputs^2); skipped below 50 steps.
SOFT_BUDGET = 20_000_000_000
#: AdaRound's regularisation weight, its annealing range of beta, and the warm-up fraction without it.
SOFT_LAMBDA = 0.01
SOFT_BETA = (20.0, 2.0)
SOFT_WARMUP = 0.2
#: Adam's step size on h.
SOFT_LR = 0.02
#: Most coordinate-descent sweeps per start (each sweep visits every weight once) ...
MAX_SWEEPS = 24
#: ... and fewer for large layers: about this many multiply-adds per start (channels x inputs^2 per sweep),
#: never fewer than 2 sweeps.
SWEEP_BUDGET = 20_000_000_000
#: Weights visited between two updates of the whole gradient in a sweep (one matrix product per block).
SWEEP_BLOCK = 64
#: Pair moves are tried when channels x inputs^2 x 9 stays below this.
PAIR_MOVE_BUDGET = 5_000_000
#: A move must lower the error by more than this fraction of the channel's energy to count (round-off).
MIN_GAIN = 1e-12


@dataclass(frozen=True)
class RoundingCandidates:
    """The three values each weight may take as integer shift levels (down, up, zero), and the nearest one."""

    levels: np.ndarray  #: float64 [C, n, 3]
    nearest: np.ndarray  #: float64 [C, n], round-to-nearest


def rounding_candidates(w_scaled: np.ndarray, levels: np.ndarray) -> RoundingCandidates:
    """Down, up and zero levels for weights already divided by their channel scale ([C, n])."""
    v = np.asarray(w_scaled, dtype=np.float64)
    idx = np.clip(np.searchsorted(levels, v, side="right") - 1, 0, len(levels) - 1)
    down = levels[idx]
    up = np.where(down >= v, down, levels[np.minimum(idx + 1, len(levels) - 1)])
    down = np.where(v < levels[0], levels[0], down)
    return RoundingCandidates(np.stack([down, up, np.zeros_like(v)], axis=-1), nearest_level(v, levels))


def quadratic_error(u: np.ndarray, h: np.ndarray, t: np.ndarray) -> np.ndarray:
    """``u^T H u - 2 u^T t`` per channel (the error up to a constant): u, t [C, n], H [n, n]."""
    return np.einsum("cn,cn->c", u @ h, u) - 2.0 * np.einsum("cn,cn->c", u, t)


def relaxed_rounding(real: np.ndarray, start: np.ndarray, h: np.ndarray, t: np.ndarray, steps: int) -> np.ndarray:
    """AdaRound's soft rounding between the down and up values ``real[..., 0:2]`` (real weights, [C, n, 3]),
    started at ``start`` (real weights [C, n]); returns the hard choice (real weights)."""
    down, up = real[..., 0], real[..., 1]
    span = up - down
    soft = np.where(start == up, 0.75, 0.25) * (span > 0)
    norm = np.maximum(np.einsum("cn,cn->c", start @ h, start), np.finfo(np.float64).tiny)[:, None]
    m = np.zeros_like(soft)
    v = np.zeros_like(soft)
    warm = int(SOFT_WARMUP * steps)
    for k in range(steps):
        grad = 2.0 * ((down + soft * span) @ h - t) * span / norm
        if k >= warm:
            beta = SOFT_BETA[0] + (SOFT_BETA[1] - SOFT_BETA[0]) * (k - warm) / max(steps - warm, 1)
            z = 2.0 * soft - 1.0
            grad -= SOFT_LAMBDA * 2.0 * beta * np.abs(z) ** (beta - 1.0) * np.sign(z)
        m = 0.9 * m + 0.1 * grad
        v = 0.999 * v + 0.001 * grad**2
        step = (m / (1 - 0.9 ** (k + 1))) / (np.sqrt(v / (1 - 0.999 ** (k + 1))) + 1e-8)
        soft = np.clip(soft - SOFT_LR * step, 0.0, 1.0)
    return np.where(soft >= 0.5, up, down)


def _single_moves(u: np.ndarray, real: np.ndarray, h: np.ndarray, t: np.ndarray, tol: np.ndarray,
                  rng: np.random.Generator) -> None:
    """Coordinate-descent sweeps until no single weight change helps (u updated in place).

    A sweep computes the gradient ``r = u H - t`` and visits the weights in blocks of SWEEP_BLOCK: within a block
    the block's own entries of r are kept current after each change, and after the block one matrix product
    brings the entries of the weights still to visit up to date. The values of all channels are read weight by
    weight from copies laid out that way."""
    hd = np.diag(h)
    rows_all = np.arange(len(u))
    sweeps = int(np.clip(SWEEP_BUDGET // max(u.size * u.shape[1], 1), 2, MAX_SWEEPS))
    real_t = np.ascontiguousarray(real.transpose(1, 0, 2))  # [n, C, 3]
    for _ in range(sweeps):
        order = rng.permutation(u.shape[1])
        r_t = np.ascontiguousarray((u @ h - t)[:, order].T)  # [n, C], the weights in visiting order
        u_t = np.ascontiguousarray(u.T)  # [n, C]
        changed = False
        for first in range(0, len(order), SWEEP_BLOCK):
            block = order[first : first + SWEEP_BLOCK]
            end = first + len(block)
            hb = h[np.ix_(block, block)]
            rb = r_t[first:end]  # [B, C], updated in place
            delta = np.zeros((len(block), len(u)))
            moved = False
            for j, i in enumerate(block):
                d = real_t[i] - u_t[i][:, None]
                gain = d**2 * hd[i] + 2 * d * rb[j][:, None]
                k = gain.argmin(axis=1)
                rows = np.flatnonzero(gain[rows_all, k] < -tol)
                if rows.size == 0:
                    continue
                moved = True
                step = d[rows, k[rows]]
                u_t[i, rows] += step
                delta[j, rows] = step
                rb[j + 1 :, rows] += hb[j, j + 1 :][:, None] * step[None, :]
            changed |= moved
            if moved and end < len(order):
                rest = h[block][:, order[end:]].T  # [n - end, B]
                hit = np.flatnonzero(delta.any(axis=0))
                if len(hit) * 2 < len(u):
                    r_t[end:, hit] += rest @ delta[:, hit]
                else:
                    r_t[end:] += rest @ delta
        u[...] = u_t.T
        if not changed:
            return


def _pair_moves(u: np.ndarray, real: np.ndarray, h: np.ndarray, t: np.ndarray, tol: np.ndarray) -> bool:
    """One pass of pair moves (u updated in place); whether any was made."""
    hd = np.diag(h)
    r = u @ h - t
    rows_all = np.arange(len(u))
    moved = False
    for i in range(u.shape[1]):
        di = real[:, i, :] - u[:, i : i + 1]  # [C, 3]
        dj = real - u[:, :, None]  # [C, n, 3]
        gain = ((di**2 * hd[i] + 2 * di * r[:, i : i + 1])[:, :, None, None]
                + (dj**2 * hd[None, :, None] + 2 * dj * r[:, :, None])[:, None, :, :]
                + 2 * di[:, :, None, None] * dj[:, None, :, :] * h[i][None, None, :, None])
        gain[:, :, i, :] = np.inf
        flat = gain.reshape(len(u), -1)
        best = flat.argmin(axis=1)
        rows = np.flatnonzero(flat[rows_all, best] < -tol)
        if rows.size == 0:
            continue
        moved = True
        a, j, b = np.unravel_index(best[rows], gain.shape[1:])
        d_i, d_j = di[rows, a], dj[rows, j, b]
        u[rows, i] += d_i
        u[rows, j] += d_j
        r[rows] += d_i[:, None] * h[i][None, :] + d_j[:, None] * h[j]
    return moved


def optimise_rounding(cand: np.ndarray, start: np.ndarray, h: np.ndarray, t: np.ndarray, scale: np.ndarray,
                      rng: np.random.Generator) -> np.ndarray:
    """Choose each weight's level among its candidates (see the module docstring).

    ``cand`` [C, n, 3] integer levels, ``start`` [C, n] the starting levels (round-to-nearest), ``scale`` [C]
    each channel's scale; ``h`` [n, n] and ``t`` [C, n] the quadratic objective in real weights. Returns the
    chosen integer levels [C, n]; per channel their error is never above the start's.
    """
    s = np.asarray(scale, dtype=np.float64)[:, None]
    real = cand * s[:, :, None]
    c, n = start.shape
    nearest = np.asarray(start, dtype=np.float64) * s
    energy = np.einsum("cn,cn->c", np.abs(nearest) @ np.abs(h), np.abs(nearest)) + np.abs(t * nearest).sum(axis=1)
    tol = MIN_GAIN * np.maximum(energy, np.finfo(np.float64).tiny)
    small = c * n * n * 9 <= PAIR_MOVE_BUDGET
    starts = [nearest]
    soft_steps = min(SOFT_STEPS, SOFT_BUDGET // max(c * n * n, 1))
    if soft_steps >= 50:
        starts.append(relaxed_rounding(real, nearest, h, t, soft_steps))
    if small:
        starts += [real[..., 0].copy(), real[..., 1].copy()]
    best, best_err = None, None
    for u in starts:
        _single_moves(u, real, h, t, tol, rng)
        if small:
            while _pair_moves(u, real, h, t, tol):
                _single_moves(u, real, h, t, tol, rng)
        if len(starts) == 1:
            return np.rint(u / s)
        err = quadratic_error(u, h, t)
        if best is None:
            best, best_err = u, err
        else:
            better = err < best_err
            best[better], best_err[better] = u[better], err[better]
    return np.rint(best / s)
