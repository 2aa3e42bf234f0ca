"""The Multiple-Choice Knapsack Problem of mixed precision: one option per layer, least total loss within a budget.

Each item (a layer) offers options, each with an integer cost (weight bytes) and a loss (its predicted
contribution to the output error); exactly one option per item is taken, the costs must add up to at most the
budget, and the losses are to add up to as little as possible. HAWQ-V3 (Yao et al., ICML 2021) states it as an
integer linear program: binary x[i, k], sum_k x[i, k] = 1, sum cost[i, k] x[i, k] <= B, minimise
sum loss[i, k] x[i, k].

``greedy`` solves it greedily, as Chen, Wang and Cheng (ICCV 2021) do: from the cheapest option of every item,
it takes the change of option with the largest loss reduction per extra cost that still fits, until none fits.
That alone can be far from the optimum on few items (a budget left unused that a larger item needed), so it then
takes improving moves while there is one (changes of one, two or three items' options at once; an upgrade paid
for by downgrades of others, least loss added per cost freed first; a downgrade whose cost goes to upgrades of
others), and it does all this for every combination of options of the ENUMERATED items whose options differ
most in cost, keeping the best. ``exact`` is the optimum by dynamic programming over the integer costs, for
small instances (budget times items within EXACT_CELLS) and for checking the greedy (docs/quantization.md has
how close the greedy comes).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import reduce
from itertools import product
from math import gcd

import numpy as np

from shiftpu.errors import ShiftpuError

#: Largest (budget / gcd of the costs) x items the exact solver takes on.
EXACT_CELLS = 50_000_000
#: Items (those whose options differ most in cost) whose every combination of options the greedy tries.
ENUMERATED = 4
#: Largest number of (item, option) triples the exchanges of three items are tried among.
TRIPLE_MOVES = 1 << 21
#: Relative loss change below which an exchange is not an improvement (float noise).
_TOLERANCE = 1e-12


class KnapsackError(ShiftpuError, ValueError):
    """No choice fits the budget, or an instance is malformed or too large to solve exactly."""


@dataclass(frozen=True)
class Option:
    """One choice for one item: its integer cost and its loss."""

    cost: int
    loss: float


def _arrays(items: Sequence[Sequence[Option]]) -> tuple[np.ndarray, np.ndarray]:
    """Costs (int64) and losses (float64) as [items, most options], padded with options that never win."""
    if not items or any(not opts for opts in items):
        raise KnapsackError("every item needs at least one option")
    width = max(len(opts) for opts in items)
    cost = np.full((len(items), width), np.iinfo(np.int64).max // 4, np.int64)
    loss = np.full((len(items), width), np.inf)
    for i, opts in enumerate(items):
        for k, o in enumerate(opts):
            if o.cost < 0 or not np.isfinite(o.loss):
                raise KnapsackError(f"item {i} option {k}: cost {o.cost}, loss {o.loss} (costs >= 0, finite losses)")
            cost[i, k], loss[i, k] = o.cost, o.loss
    return cost, loss


def total(items: Sequence[Sequence[Option]], choice: Sequence[int]) -> tuple[int, float]:
    """Total cost and loss of a choice (one option index per item)."""
    return (sum(items[i][k].cost for i, k in enumerate(choice)),
            float(sum(items[i][k].loss for i, k in enumerate(choice))))


def cheapest(items: Sequence[Sequence[Option]]) -> list[int]:
    """Per item the cheapest option, the one of least loss among equally cheap ones."""
    return [min(range(len(opts)), key=lambda k, opts=opts: (opts[k].cost, opts[k].loss)) for opts in items]


def greedy(items: Sequence[Sequence[Option]], budget: int) -> list[int]:
    """A choice within ``budget`` (module docstring): for every combination of options of the ENUMERATED items
    whose options differ most in cost, the others by loss reduction per extra cost then improving exchanges;
    the best of these. Options that another beats in cost and loss are left out first. Raises KnapsackError when
    even the cheapest options exceed the budget."""
    kept = [_undominated(opts) for opts in items]
    cost, loss = _arrays([[opts[k] for k in ks] for opts, ks in zip(items, kept, strict=True)])
    rows = np.arange(len(items))
    base = np.argmin(np.where(np.isfinite(loss), cost, np.iinfo(np.int64).max), axis=1)
    floor = int(cost[rows, base].sum())
    if floor > budget:
        raise KnapsackError(f"the budget {budget} is below the cheapest choice ({floor})")
    spread = [int(cost[i, : len(ks)].max() - cost[i, : len(ks)].min()) for i, ks in enumerate(kept)]
    fixed = sorted(range(len(items)), key=lambda i: -spread[i])[:ENUMERATED]
    best, best_loss = base, float(loss[rows, base].sum())
    for combo in product(*(range(len(kept[i])) for i in fixed)):
        choice = base.copy()
        choice[fixed] = combo
        slack = budget - int(cost[rows, choice].sum())
        if slack < 0:
            continue
        free = np.ones(len(items), bool)
        free[fixed] = False
        choice = _improve(cost, loss, *_upgrade(cost, loss, choice, slack, free))
        value = float(loss[rows, choice].sum())
        if value < best_loss - _TOLERANCE * max(1.0, abs(best_loss)):
            best, best_loss = choice, value
    return [kept[i][int(k)] for i, k in enumerate(best)]


def upgrade_path(items: Sequence[Sequence[Option]]) -> list[list[int]]:
    """The greedy's choices with no budget, one more upgrade (largest loss reduction per extra cost) each, from
    the cheapest choice to the least loss: the frontier of cost against loss as the greedy walks it."""
    cost, loss = _arrays(items)
    choice = np.array(cheapest(items))
    unlimited = int(sum(o.cost for opts in items for o in opts))
    path = [choice.tolist()]
    while True:
        choice, _ = _upgrade(cost, loss, choice.copy(), unlimited, np.ones(len(items), bool), steps=1)
        if choice.tolist() == path[-1]:
            return path
        path.append(choice.tolist())


def _undominated(opts: Sequence[Option]) -> list[int]:
    """The options no other option beats in both cost and loss (the first of equal ones)."""
    return [k for k, o in enumerate(opts)
            if not any((p.cost <= o.cost and p.loss <= o.loss) and (p.cost < o.cost or p.loss < o.loss or j < k)
                       for j, p in enumerate(opts))]


def _upgrade(cost: np.ndarray, loss: np.ndarray, choice: np.ndarray, slack: int, free: np.ndarray,
             steps: int | None = None) -> tuple[np.ndarray, int]:
    """Changes of the ``free`` items' options by largest loss reduction per extra cost, while one fits (at most
    ``steps`` of them)."""
    rows = np.arange(len(choice))
    for _ in range(steps if steps is not None else cost.size):
        extra = cost - cost[rows, choice][:, None]
        gain = loss[rows, choice][:, None] - loss
        tol = _TOLERANCE * max(1.0, float(np.abs(loss[rows, choice]).sum()))
        fits = (extra <= slack) & (gain > tol) & free[:, None]
        if not fits.any():
            return choice, slack
        ratio = np.where(fits, gain / np.maximum(extra, 0.5), -np.inf)  # free improvements first
        i, k = np.unravel_index(int(np.argmax(ratio)), ratio.shape)
        slack -= int(extra[i, k])
        choice[i] = k
    return choice, slack


def _improve(cost: np.ndarray, loss: np.ndarray, choice: np.ndarray, slack: int) -> np.ndarray:
    """Take the best improving move that fits while there is one: a change of one, two or three items' options
    (three while the instance has at most TRIPLE_MOVES option triples), an upgrade paid for by downgrading
    others (least loss per byte freed first), or a downgrade whose bytes go to upgrades of others (largest
    loss reduction per byte first)."""
    n, width = cost.shape
    rows = np.arange(n)
    item_of = np.repeat(rows, width)
    distinct = item_of[:, None] != item_of[None, :]
    triples = (n * width) ** 3 <= TRIPLE_MOVES
    for _ in range(16 * n * width):
        extra = (cost - cost[rows, choice][:, None]).ravel()
        gain = (loss[rows, choice][:, None] - loss).ravel()
        gain = np.where(np.isfinite(gain), gain, -np.inf)
        tol = _TOLERANCE * max(1.0, float(np.abs(loss[rows, choice]).sum()))
        single = np.where(extra <= slack, gain, -np.inf)
        best_gain, best_choice = float(single.max()), None
        if best_gain > tol:
            best_choice = choice.copy()
            best_choice[item_of[int(np.argmax(single))]] = int(np.argmax(single)) % width
        pair = np.where(distinct & (extra[:, None] + extra[None, :] <= slack), gain[:, None] + gain[None, :], -np.inf)
        tables = [pair]
        if triples:
            three = gain[:, None, None] + gain[None, :, None] + gain[None, None, :]
            ok = (distinct[:, :, None] & distinct[:, None, :] & distinct[None, :, :]
                  & (extra[:, None, None] + extra[None, :, None] + extra[None, None, :] <= slack))
            tables.append(np.where(ok, three, -np.inf))
        for table in tables:
            if float(table.max()) > best_gain:
                best_gain, best_choice = float(table.max()), choice.copy()
                for m in np.unravel_index(int(np.argmax(table)), table.shape):
                    best_choice[int(m) // width] = int(m) % width
        for m in range(n * width):
            i, k = divmod(m, width)
            if k == choice[i] or not np.isfinite(gain[m]):
                continue
            moved = choice.copy()
            moved[i] = k
            if extra[m] > slack and gain[m] > best_gain:
                moved = _repair(cost, loss, moved, int(extra[m]) - slack, i)
            elif extra[m] < 0:
                free = np.ones(n, bool)
                free[i] = False
                moved, _ = _upgrade(cost, loss, moved, slack - int(extra[m]), free)
            else:
                continue
            if moved is None:
                continue
            value = float(loss[rows, choice].sum() - loss[rows, moved].sum())
            if value > best_gain and int(cost[rows, moved].sum() - cost[rows, choice].sum()) <= slack:
                best_gain, best_choice = value, moved
        if best_choice is None or best_gain <= tol:
            break
        slack -= int(cost[rows, best_choice].sum() - cost[rows, choice].sum())
        choice = best_choice
    return choice


def _repair(cost: np.ndarray, loss: np.ndarray, choice: np.ndarray, need: int, keep: int) -> np.ndarray | None:
    """``choice`` with other items than ``keep`` moved to cheaper options until ``need`` bytes are freed: least
    loss added per byte freed first, or at any step the one change that frees the rest at the least loss,
    whichever adds less loss in all (None when the bytes cannot be freed)."""
    rows = np.arange(len(choice))
    choice = choice.copy()
    added_so_far = 0.0
    best: tuple[float, np.ndarray] | None = None
    while need > 0:
        freed = cost[rows, choice][:, None] - cost
        added = np.maximum(loss - loss[rows, choice][:, None], 0.0)
        ok = (freed > 0) & np.isfinite(loss)
        ok[keep] = False
        if not ok.any():
            break
        finish = np.where(ok & (freed >= need), added, np.inf)
        if np.isfinite(finish.min()) and (best is None or added_so_far + float(finish.min()) < best[0]):
            i, k = np.unravel_index(int(np.argmin(finish)), finish.shape)
            done = choice.copy()
            done[i] = k
            best = (added_so_far + float(finish[i, k]), done)
        ratio = np.where(ok, added / np.maximum(freed, 1), np.inf)
        i, k = np.unravel_index(int(np.argmin(ratio)), ratio.shape)
        need -= int(freed[i, k])
        added_so_far += float(added[i, k])
        choice[i] = k
    if need <= 0 and (best is None or added_so_far < best[0]):
        best = (added_so_far, choice)
    return None if best is None else best[1]


def exact(items: Sequence[Sequence[Option]], budget: int) -> list[int]:
    """The choice of least total loss within ``budget`` (dynamic programming over the costs divided by their
    greatest common divisor). Raises KnapsackError when nothing fits or the instance exceeds EXACT_CELLS."""
    _arrays(items)  # validates
    real = [o.cost for opts in items for o in opts]
    unit = reduce(gcd, real) or 1
    cap = budget // unit
    if cap < 0 or sum(min(o.cost for o in opts) for opts in items) > budget:
        raise KnapsackError(f"the budget {budget} is below the cheapest choice")
    if (cap + 1) * len(items) > EXACT_CELLS:
        raise KnapsackError(f"{len(items)} items with a budget of {cap} cost units: too large to solve exactly")
    # best[c]: least loss of the items so far at a total cost of at most c units
    best = np.zeros(cap + 1)
    picks = np.zeros((len(items), cap + 1), np.int16)
    for i, opts in enumerate(items):
        new = np.full(cap + 1, np.inf)
        for k, o in enumerate(opts):
            c = o.cost // unit
            if c > cap:
                continue
            cand = np.full(cap + 1, np.inf)
            cand[c:] = best[: cap + 1 - c] + o.loss
            better = cand < new
            new[better] = cand[better]
            picks[i, better] = k
        best = new
    choice = []
    c = cap
    for i in range(len(items) - 1, -1, -1):
        k = int(picks[i, c])
        choice.append(k)
        c -= items[i][k].cost // unit
    return choice[::-1]
