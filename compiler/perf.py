"""Performance model: estimated cycles, DDR traffic and PE utilisation of each instruction.

Two schedules of the same loop nest (docs/architecture.md) are modelled term by term:

* :attr:`Schedule.RTL`: the generated RTL, term by term as docs/rtl.md ("Cycle model") states it. The
  CONV engine has three machines: the main FSM (per output row and input tile: wait for the line buffer,
  weights when the (output tile, input tile) pair changed, the PE array, hand-over to the store), the
  line-buffer loader (per row and block ``1 + columns`` cycles; its issuer queues the reads of all the rows
  of a load at once, so only the first row inside the tensor waits ``max(0, L_r - leading pad columns)``
  for its first beat, as the padding columns are written while the read is in flight) and the store (per
  channel group of ``min(pe_oc, cb)``: ``1 + sw`` beats). With one
  input tile and ``kh + min(stride, kh)`` row slots in the line buffer the loader fetches the next row's
  new rows while the current row computes (K-row reuse and prefetch); when a row's accumulators fit half
  the buffer the next row computes while the store streams the previous one out of the other half. The
  model runs the three machines' recurrence row by row (runs of identical rows at once); the loader and
  the store together move no more than the board's DDR bandwidth. POOL, ADD and MOVE queue their reads
  ahead too: only an instruction's first read waits. ``L_r`` is the read latency: by default that of the
  simulation's memory model (cocotbext-axi ``AxiRam``), for a board its DDR latency. This is what the RTL
  simulation measures (``tests/test_rtl_latency.py`` with a board-like latency).
* :attr:`Schedule.OVERLAPPED`: a coarser model: every load and write-back after the prologue
  hidden behind the computation, reads and writes of a row sharing the bandwidth (described below).

Transfers cost ``max(1, beat bytes / B)`` cycles per beat at the board's bandwidth. Symbols of the
overlapped model: ``P = pe_oc * pe_px``, ``cb`` the channel block, ``B`` the DDR bytes per
accelerator cycle (``min(board bandwidth / clock, AXI bytes per beat)``).

CONV, for each column strip (width ``sw``) and output-channel tile (``ot`` channels):

* ``compute_row = sum over input tiles (it channels) of C(sw, ot, it)`` with ``C`` the formula of the
  dataflow (PIXEL ``ceil(sw/pe_px)·ceil(ot/pe_oc)·ceil(it/pe_ic)·kh·kw``; INPUT_CHANNEL
  ``sw·ceil(ot/pe_oc)·ceil(it/pe_px)·kh·kw``;
  DEPTHWISE ``ceil(sw/pe_px)·ceil(ot/pe_oc)·kh·kw``).
* input bytes: the strip's input columns ``cols = min((sw−1)·stride + kw, in_w)``, ``ceil(it/cb)·cb`` bytes per
  pixel. With one input tile the K-row line buffer fetches every input row of the strip once (``rows =
  min(in_h, (out_h−1)·stride + kh)``) and the weights once; with several input tiles each output row refetches
  ``kh`` rows and the weights of every input tile.
* output bytes per row: ``sw · ceil(ot/cb)·cb``; bias/shift table: ``8·ot`` once.
* time: ``FILL + prologue/B + out_h · max(compute_row, row_bytes/B)``: the first ``kh`` rows, the first
  weights and the table are loaded before the PE array starts (prologue); afterwards loads of the next row
  and the write-back of the previous row overlap the computation (double buffering).

POOL, ADD and MOVE stream one output beat (``cb`` channels of one pixel) per cycle:
``FILL + max(out_beats, (read_bytes + write_bytes)/B)``. Every instruction also pays ``INSTR_OVERHEAD``
cycles (fetch and decode). Utilisation of an instruction is ``MACs / (cycles · P)`` (0 for non-CONV).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum
from functools import cache
from importlib import import_module

from shiftpu.arch import limits
from shiftpu.arch.config import AccelConfig
from shiftpu.arch.isa import Dataflow, Instruction, Opcode
from shiftpu.arch.latency import (
    CONV_COMPUTE_LATENCY,
    CONV_IC_SETUP,
    CONV_ISSUE_LATENCY,
    CONV_SETUP,
    CONV_STORE_LATENCY,
    CONV_STORE_SETUP,
    CONV_TILE_SETUP,
    CONV_W_SETUP,
    DECODE_CHECK,
    ELT_ISSUE_LATENCY,
    ELT_OUT_LATENCY,
    ELT_SETTLE,
    ENGINE_DONE,
    ENGINE_START,
    LOADER_KICK_LATENCY,
    READ_ADDRESS_LATENCY,
    pool_tree_stages,
)
from shiftpu.arch.layout import QPARAM_BYTES, ceil_div, weight_lanes

#: Cycles to fetch and decode one instruction (64 bytes) before its work starts.
INSTR_OVERHEAD = 16
#: Pipeline fill/drain cycles per (strip, output tile) of a CONV and per streaming instruction.
FILL = 8
#: AXI read latency in cycles (command accepted to first beat) of the RTL simulation's memory model, the
#: default; a board's estimate uses the board file's DDR read latency instead.
READ_LATENCY = 2
#: Cycles from the last write beat until the writer reports it idle: its response, and the registered idle flag
#: (FINISH of the CONV engine).
WRITE_LATENCY = 5
#: Cycles from the last segment of a POOL/ADD/MOVE to its retirement: its last beat's way through the output
#: pipeline and queue, and the write response (measured on the RTL simulation besides ELT_OUT_LATENCY).
STREAM_FINISH = ELT_OUT_LATENCY + 5


class Schedule(Enum):
    """How loads, computation and stores follow each other in the accelerator."""

    RTL = "rtl"  #: the generated RTL: loader, PE array and store overlapping where the buffers allow
    OVERLAPPED = "overlapped"  #: double-buffered loads and stores overlap the computation


@dataclass(frozen=True)
class InstrCost:
    """Estimated cost of one instruction."""

    cycles: int
    compute_cycles: int
    stall_cycles: int  #: cycles the PE array waits on memory
    read_bytes: int
    write_bytes: int
    macs: int

    def utilization(self, cfg: AccelConfig) -> float:
        """Useful MACs per PE per cycle (0..1)."""
        return self.macs / (self.cycles * cfg.macs_per_cycle) if self.cycles else 0.0


def bytes_per_cycle(cfg: AccelConfig, ddr_bytes_per_cycle: float) -> float:
    """DDR bytes the accelerator moves per cycle: the board's bandwidth, at most one AXI beat."""
    return min(float(ddr_bytes_per_cycle), float(cfg.axi_bytes))


def _tiles(total: int, tile: int) -> list[tuple[int, int]]:
    """(size, count) pairs of a dimension cut into tiles: full tiles and the remainder."""
    full, rem = divmod(total, tile)
    out = [(tile, full)] if full else []
    return out + [(rem, 1)] if rem else out


def conv_compute(dataflow: Dataflow, sw: int, ot: int, it: int, kh: int, kw: int, cfg: AccelConfig) -> int:
    """PE-array cycles of one (row, input tile) step (docs/architecture.md)."""
    if dataflow is Dataflow.PIXEL:
        return ceil_div(sw, cfg.pe_px) * ceil_div(ot, cfg.pe_oc) * ceil_div(it, cfg.pe_ic) * kh * kw
    if dataflow is Dataflow.INPUT_CHANNEL:
        return sw * ceil_div(ot, cfg.pe_oc) * ceil_div(it, cfg.pe_px) * kh * kw
    return ceil_div(sw, cfg.pe_px) * ceil_div(ot, cfg.pe_oc) * kh * kw


def conv_macs(i: Instruction) -> int:
    per_out = (1 if i.depthwise else i.in_c) * i.kh * i.kw
    return i.out_c * i.out_h * i.out_w * per_out


def _conv_cost(i: Instruction, cfg: AccelConfig, bpc: float) -> InstrCost:
    cb = cfg.channel_block
    wbits = cfg.weight_code.bits
    cycles = compute = read = write = 0
    first_rows = min(i.kh, i.in_h)
    all_rows = min(i.in_h, (i.out_h - 1) * i.stride + i.kh)
    for sw, n_strips in _tiles(i.out_w, i.strip_w):
        cols = min((sw - 1) * i.stride + i.kw, i.in_w)
        for ot, n_ot in _tiles(i.out_c, i.oc_tile):
            in_tiles = [(ot, 1)] if i.depthwise else _tiles(i.in_c, i.ic_tile)
            per_oc = 1 if i.depthwise else None
            n_it = sum(n for _, n in in_tiles)
            c_row = sum(n * conv_compute(i.dataflow, sw, ot, it, i.kh, i.kw, cfg) for it, n in in_tiles)
            w_bytes = sum(n * ceil_div(ot * (per_oc or it) * i.kh * i.kw * wbits, 8) for it, n in in_tiles)
            pix_bytes = sum(n * ceil_div(it, cb) * cb for it, n in in_tiles)
            out_row = sw * ceil_div(ot, cb) * cb
            table = QPARAM_BYTES * ot
            if n_it == 1:
                prologue = first_rows * cols * pix_bytes + w_bytes + table
                steady_in = (all_rows - first_rows) * cols * pix_bytes
                total_in = prologue - table - w_bytes + steady_in
                row_bytes = steady_in / i.out_h + out_row
                rd = total_in + w_bytes + table
            else:
                it0 = in_tiles[0][0]
                prologue = first_rows * cols * ceil_div(it0, cb) * cb + ceil_div(ot * it0 * i.kh * i.kw * wbits, 8) + table
                row_bytes = i.kh * cols * pix_bytes + w_bytes + out_row
                rd = i.out_h * (i.kh * cols * pix_bytes + w_bytes) + table
            t = FILL + prologue / bpc + i.out_h * max(c_row, row_bytes / bpc)
            reps = n_strips * n_ot
            cycles += reps * t
            compute += reps * i.out_h * c_row
            read += reps * rd
            write += reps * i.out_h * out_row
    total = INSTR_OVERHEAD + int(round(cycles))
    return InstrCost(total, compute, total - compute, int(read), int(write), conv_macs(i))


def _stream_cost(i: Instruction, cfg: AccelConfig, bpc: float) -> InstrCost:
    cb = cfg.channel_block
    in_beats = ceil_div(i.in_c, cb) * i.in_h * i.in_w
    out_beats = ceil_div(i.out_c, cb) * i.out_h * i.out_w
    read = in_beats * cb * (2 if i.opcode is Opcode.ADD else 1)
    write = out_beats * cb
    compute = out_beats
    t = FILL + max(compute, (read + write) / bpc)
    total = INSTR_OVERHEAD + int(round(t))
    return InstrCost(total, compute, total - compute, read, write, 0)


def _valid_rows(i: Instruction, kys: range | None = None, y_lo: int = 0) -> int:
    """Number of (output row >= y_lo, kernel row in kys) pairs whose input row lies inside the tensor."""
    n = 0
    for ky in range(i.kh) if kys is None else kys:
        lo = max(y_lo, -(-(i.pad_t - ky) // i.stride))
        hi = min(i.out_h - 1, (i.in_h - 1 + i.pad_t - ky) // i.stride)
        n += max(0, hi - lo + 1)
    return n


def _loaded_rows(i: Instruction, reuse: bool) -> tuple[int, int]:
    """(output row, kernel row) pairs the line buffer loads, and how many of them lie inside the tensor.

    With one input tile (``reuse``) the first output row loads all ``kh`` rows and every later one only the last
    ``stride`` (K-row reuse); otherwise every output row loads ``kh`` rows.
    """
    if not reuse or i.out_h == 1:
        return i.out_h * i.kh, _valid_rows(i)
    later = range(max(0, i.kh - i.stride), i.kh)
    loaded = i.kh + (i.out_h - 1) * len(later)
    return loaded, _valid_rows(i, range(i.kh), 0) - _valid_rows(i, range(i.kh), 1) + _valid_rows(i, later, 1)


def _row_wait(i: Instruction, x0: int, cols: int, lr: int) -> int | None:
    """Cycles a row read of the segment starting at output column ``x0`` waits for its first beat.

    The leading padding columns are written while the read is in flight, so the wait is
    ``max(0, L_r - leading pad columns)``; None when no column of the segment lies inside the tensor
    (then no read is issued).
    """
    ix0 = x0 * i.stride - i.pad_l
    lo, hi = max(0, ix0), min(i.in_w, ix0 + cols)
    if hi <= lo:
        return None
    return max(0, lr - (lo - ix0))


def _memory_extra(lr: int) -> int:
    """Cycles the memory answers later than the RTL simulation's default (its write responses as much later)."""
    return lr - (READ_LATENCY + READ_ADDRESS_LATENCY - 1)


def _fetch_cycles(cfg: AccelConfig, beat: float, lr: int) -> float:
    """Sequencer: fetch one 64-byte instruction (command, latency, beats), latch, check, decode, retire."""
    return 1 + lr + 64 / cfg.axi_bytes * beat + 1 + DECODE_CHECK + 1 + 1


def _weight_load(i: Instruction, cfg: AccelConfig, o0: int, i0: int, it: int, obs: int,
                 beat: float, lr: int) -> tuple[float, int]:
    """Weight buffer fill for one (output tile, input tile): cycles (per pe_oc block W_CMD 1 + L_r + beats of its
    run) and DDR bytes (the beats). A run starts ``s0 mod steps-per-beat`` steps into its first beat (``s0`` its
    first step in DDR).
    """
    khkw = i.kh * i.kw
    po = cfg.pe_oc
    if i.depthwise:
        channels, run = 1, 1
    else:  # the layout's channels: rounded up to whole lane groups (pe_px for INPUT_CHANNEL, pe_ic for PIXEL)
        lanes = weight_lanes(i.dataflow, cfg)
        channels, run = ceil_div(i.in_c, lanes) * lanes, ceil_div(it, lanes) * lanes
    steps = run * khkw
    step_bits = po * cfg.weight_code.bits
    total = 0.0
    n_beats = 0
    for ob in range(obs):
        if step_bits <= cfg.axi_data_bits:
            per_beat = cfg.axi_data_bits // step_bits
            s0 = ((o0 // po + ob) * channels + (0 if i.depthwise else i0)) * khkw
            beats = ceil_div(s0 % per_beat + steps, per_beat)
        else:
            beats = steps * step_bits // cfg.axi_data_bits
        total += CONV_W_SETUP + 1 + lr + beats * beat
        n_beats += beats
    return total, n_beats * cfg.axi_bytes


def _blocks_spanned(c0: int, n: int, cb: int) -> int:
    """Channel blocks that channels ``c0 .. c0 + n - 1`` touch."""
    return (c0 + n - 1) // cb - c0 // cb + 1


def _row_loads(i: Instruction, kys: range, y: int, nblk: int, cols: int, beat: float, wait: int | None) -> float:
    """Loader cycles for kernel rows ``kys`` of output row ``y`` (each in ``nblk`` blocks): the registered kick
    (LOADER_KICK_LATENCY), L_START 1, then per row L_ROW 1 and its columns. A row inside the tensor cannot stream before its data: its read leaves the
    issuer after CONV_ISSUE_LATENCY + 1 cycles per row up to it (the issuer walks padding rows at that pace
    too) and its first beat comes ``wait`` later (``L_r`` less the leading padding columns). The issuer
    queues the reads ahead, so later rows usually find their data arrived (the memory returns one beat per
    cycle, in order)."""
    row_cycles = cols * beat
    if wait is None:
        return LOADER_KICK_LATENCY + 1 + len(kys) * nblk * (1 + row_cycles)
    t = 2.0  # L_START, the first L_ROW: where the first row's columns would start (after the kick)
    r = 0
    for ky in kys:
        inside = 0 <= y * i.stride - i.pad_t + ky < i.in_h
        for _ in range(nblk):
            if inside:
                t = max(t, (r + 1) * (CONV_ISSUE_LATENCY + 1) + wait)
            t += row_cycles + 1
            r += 1
    return LOADER_KICK_LATENCY + t - 1


@dataclass(frozen=True)
class _Tile:
    """One input tile of a CONV row: what the main FSM of the CONV engine does for it."""

    nblk: int
    compute: int
    weights: float  #: weight-load cycles when the weights are (re)loaded
    reads_partials: bool  #: adds to partial sums (reads the accumulator port)


def _conv_rows(i: Instruction, cfg: AccelConfig, tiles: tuple[_Tile, ...], load_weights_first: bool, cols: int,
               store: float, pf: bool, dbl: bool, beat: float, wait: int | None) -> float:
    """Cycles of the rows of one (strip, output tile), from the first ROW to the state after the last NEXT_ROW.

    Three machines (docs/rtl.md, "Cycle model"): the main FSM (per row ROW, per input tile IC, IC_CHECK,
    LB_WAIT, W_CHECK, weights, COMPUTE_INIT, compute, DRAIN, STORE; NEXT_ROW), the line-buffer loader and the
    store, each a recurrence on the cycle where it becomes free. Rows with the same loads repeat with a
    constant period once the machines' offsets repeat, so runs of them are added at once.
    """
    kh, single = i.kh, len(tiles) == 1
    r_new = min(i.stride, kh)
    later, full = range(kh - r_new, kh), range(kh)
    lo = max(1, ceil_div(i.pad_t - (kh - r_new if single else 0), i.stride))  # first row whose loads are all inside
    hi = (i.in_h + i.pad_t - kh) // i.stride  # last one
    t = 0.0
    l_free = s_free = 0.0  # first cycle the loader / the store is idle
    pf_pending = False
    prev: tuple | None = None
    y = 0
    while y < i.out_h:
        interior = lo <= y and y + 1 <= hi and y + 1 < i.out_h - 1
        state = (max(0.0, l_free - t), max(0.0, s_free - t), pf_pending)
        if interior and prev is not None and prev[0] == state and prev[1] == y - 1:
            period = t - prev[2]
            n = min(hi - 1, i.out_h - 3) - y + 1  # rows of the run still ahead, all alike
            t += n * period
            l_free += n * period
            s_free += n * period
            y += n
            prev = None
            continue
        prev = (state, y, t) if interior else None
        t += 1  # ROW
        for j, tile in enumerate(tiles):
            # IC, IC_SETUP (its last cycle kicks the loader unless the rows came ahead)
            t += 1 + (1 if single and y > 0 else CONV_IC_SETUP)
            if pf_pending:
                pf_pending = False
                t = max(t, l_free) + 1  # LB_WAIT
            else:
                kys = later if single and y > 0 else full
                l_free = t + _row_loads(i, kys, y, tile.nblk, cols, beat, wait)
                t = l_free + 1
            t += 1  # W_CHECK
            if not single or (y == 0 and load_weights_first):
                t += tile.weights
            if tile.reads_partials or not dbl:
                t = max(t, s_free)  # COMPUTE_INIT waits for the store
            if pf and y + 1 < i.out_h:
                l_free = t + 1 + _row_loads(i, later, y + 1, tile.nblk, cols, beat, wait)
                pf_pending = True
            t += 1 + tile.compute + CONV_COMPUTE_LATENCY  # COMPUTE_INIT, compute, the pipeline
            if j == len(tiles) - 1:
                k = max(t, s_free)  # STORE hands the row to the store
                s_free = k + 1 + store
                t = k + 1
            else:
                t += 1
        t = (max(t, s_free) if y == i.out_h - 1 else t) + 1  # NEXT_ROW
        y += 1
    return t


def _conv_sequential(i: Instruction, cfg: AccelConfig, beat: float, lr: int) -> InstrCost:
    """CONV on the generated RTL: its three machines row by row (docs/rtl.md, "Cycle model")."""
    cb, po = cfg.channel_block, cfg.pe_oc
    group = min(po, cb)
    padded = ceil_div(i.out_c, cb) * cb
    # SETUP; FINISH: the last row's beats leave the store's pipeline and their write responses come back
    cycles = (_fetch_cycles(cfg, beat, lr) + ENGINE_START + ENGINE_DONE + CONV_SETUP + 1 + CONV_STORE_LATENCY + WRITE_LATENCY
              + _memory_extra(lr))
    compute = read = write = 0
    in_tiles = {o0: [(o0, min(i.oc_tile, i.out_c - o0))] if i.depthwise else
                [(i0, min(i.ic_tile, i.in_c - i0)) for i0 in range(0, i.in_c, i.ic_tile)]
                for o0 in range(0, i.out_c, i.oc_tile)}
    single = len(in_tiles[0]) == 1
    # Weights stay in the weight buffer from one (strip, output tile) to the next only with one input tile and
    # one output tile: then only the first strip loads them. Strips alike in width and read wait cost the same.
    reload = not single or len(in_tiles) > 1
    strips = Counter((min(i.strip_w, i.out_w - x0), _row_wait(i, x0, (min(i.strip_w, i.out_w - x0) - 1) * i.stride
                                                             + i.kw, lr), x0 == 0)
                     for x0 in range(0, i.out_w, i.strip_w))
    w_loads: dict[tuple[int, int], tuple[float, int]] = {}  # weight loads per (o0, i0), alike for every strip
    loaded, _ = _loaded_rows(i, reuse=single)
    rows: dict[tuple, float] = {}
    for (sw, wait, first_strip), n in strips.items():
        cols = (sw - 1) * i.stride + i.kw
        pgs = ceil_div(sw, cfg.pe_px)
        for o0, tiles_of in in_tiles.items():
            ot = min(i.oc_tile, i.out_c - o0)
            obs = ceil_div(ot, po)
            end_ch = padded - o0 if o0 + i.oc_tile >= i.out_c else ot
            qp_words = obs * po
            # TILE, TILE_SETUP, QP_CMD, then the bias/shift table: one 8-byte word per cycle
            cycles += n * (2 + CONV_TILE_SETUP + lr
                           + max(qp_words, ceil_div(qp_words * QPARAM_BYTES, cfg.axi_bytes) * beat))
            read += n * qp_words * QPARAM_BYTES
            for i0, it in tiles_of:
                if (o0, i0) not in w_loads:
                    w_loads[o0, i0] = _weight_load(i, cfg, o0, i0, it, obs, beat, lr)
            tiles = tuple(_Tile(_blocks_spanned(i0, it, cb), conv_compute(i.dataflow, sw, ot, it, i.kh, i.kw, cfg),
                                w_loads[o0, i0][0], not i.depthwise and i0 != 0) for i0, it in tiles_of)
            pf = limits.prefetches_rows(i.kh, i.stride, tiles[0].nblk, cols, single, cfg)
            dbl = limits.double_buffers_acc(obs, pgs, cfg)
            store = ceil_div(end_ch, group) * (CONV_STORE_SETUP + 1 + sw * beat)  # per group S_ADDR, S_CMD, beats
            key = (tiles, first_strip or reload, cols, store, pf, dbl, wait)
            if key not in rows:  # output tiles of one size are alike
                rows[key] = _conv_rows(i, cfg, tiles, first_strip or reload, cols, store, pf, dbl, beat, wait)
            cycles += n * rows[key]
            # weight bytes: every row and input tile with several input tiles, else once per load
            w_times = n * (i.out_h if not single else 1) if first_strip or reload else 0
            read += w_times * sum(w_loads[o0, i0][1] for i0, _ in tiles_of)
            for tile in tiles:
                compute += n * i.out_h * tile.compute
                read += n * loaded * tile.nblk * cols * cb
            write += n * i.out_h * sw * end_ch
    total = int(round(cycles))
    return InstrCost(total, compute, total - compute, read, write, conv_macs(i))


#: Cycles the POOL/ADD/MOVE engine's first read arrives later than its first LOAD_COLS could take it, besides the
#: memory's latency: the issuer's Q_CALC against the engine's SEG and SETTLE.
_ISSUER_LAG = ELT_ISSUE_LATENCY - ELT_SETTLE - 1


def _stream_sequential(i: Instruction, cfg: AccelConfig, beat: float, lr: int) -> InstrCost:
    """POOL, ADD and MOVE on the generated RTL, segment by segment (shiftpu/hw/eltwise.py).

    The engine's read issuer queues every read ahead, so only the instruction's first read waits for the
    memory (``L_r`` less the cycles the engine spends before it takes that read's data)."""
    cb = cfg.channel_block
    nblk = ceil_div(i.out_c, cb)
    cycles = _fetch_cycles(cfg, beat, lr) + ENGINE_START + ENGINE_DONE + STREAM_FINISH + _memory_extra(lr)
    read = write = 0
    pool_valid = _valid_rows(i) if i.opcode is Opcode.POOL else 0
    first_wait = None
    for xs in range(0, i.out_w, cfg.strip_width):
        n = min(cfg.strip_width, i.out_w - xs)
        reps = i.out_h * nblk
        out = 1 + n * beat + 1  # OUT_CMD, beats issued into the output pipeline, NEXT
        if i.opcode is Opcode.POOL:
            cols = (n - 1) * i.stride + i.kw
            wait = _row_wait(i, xs, cols, lr)
            # SEG, per kernel row SETTLE + LOAD 1 + P_NEXT 1; rows inside the tensor: their columns (max while
            # streaming)
            cycles += reps * (1 + i.kh * (ELT_SETTLE + 2) + pool_tree_stages(cfg.max_kernel) - 1 + out)
            if wait is not None:
                cycles += nblk * pool_valid * cols * beat
                read += nblk * pool_valid * cols * cb
                if first_wait is None and pool_valid:
                    # the first row inside: the engine passes the padding rows above it (SETTLE, LOAD and P_NEXT
                    # each) while the issuer skips them (Q_CALC and Q_RUN each)
                    pad_rows = min((ky for ky in range(i.kh) if 0 <= ky - i.pad_t < i.in_h), default=0)
                    first_wait = max(0, wait + _ISSUER_LAG + pad_rows * (ELT_ISSUE_LATENCY - ELT_SETTLE - 1))
        elif i.opcode is Opcode.ADD:
            # SEG, SETTLE, LOAD 1 + n, OUT_CMD 1 + n beats (B taken as each is issued), NEXT
            cycles += reps * (1 + ELT_SETTLE + 1 + n * beat + out)
            read += reps * 2 * n * cb
            first_wait = max(0, lr + _ISSUER_LAG) if first_wait is None else first_wait
        else:
            cols = ceil_div(n, i.upsample)
            cycles += reps * (1 + ELT_SETTLE + 1 + cols * beat + out)  # SEG, SETTLE, LOAD, columns, out
            read += reps * cols * cb
            first_wait = max(0, lr + _ISSUER_LAG) if first_wait is None else first_wait
        write += reps * n * cb
    total = int(round(cycles + (first_wait or 0)))
    compute = i.out_h * i.out_w * nblk
    return InstrCost(total, compute, total - compute, int(read), int(write), 0)


def _timing(cfg: AccelConfig, ddr_bytes_per_cycle: float, read_latency: int) -> tuple[float, float, int]:
    """Bytes per cycle, cycles per AXI beat and ``L_r`` (the reader's address stage beyond the one READ_LATENCY
    counts) of a target."""
    bpc = bytes_per_cycle(cfg, ddr_bytes_per_cycle)
    return bpc, max(1.0, cfg.axi_bytes / bpc), read_latency + READ_ADDRESS_LATENCY - 1


def _within_bandwidth(c: InstrCost, ddr_bytes_per_cycle: float) -> InstrCost:
    """Reads and writes move at once (the CONV loader and store, ADD's B operand and output): together no faster
    than the board's DDR."""
    floor = int(round((c.read_bytes + c.write_bytes) / ddr_bytes_per_cycle))
    return c if c.cycles >= floor else InstrCost(floor, c.compute_cycles, floor - c.compute_cycles, c.read_bytes,
                                                 c.write_bytes, c.macs)


def _engine_cost(sequential: Callable[..., InstrCost], overlapped: Callable[..., InstrCost], i: Instruction,
                 cfg: AccelConfig, ddr_bytes_per_cycle: float, schedule: Schedule, read_latency: int) -> InstrCost:
    """An engine's instruction: its RTL sequence within the DDR bandwidth (rtl schedule), or the overlapped model."""
    bpc, beat, lr = _timing(cfg, ddr_bytes_per_cycle, read_latency)
    if schedule is Schedule.RTL:
        return _within_bandwidth(sequential(i, cfg, beat, lr), ddr_bytes_per_cycle)
    return overlapped(i, cfg, bpc)


def conv_cost(i: Instruction, cfg: AccelConfig, ddr_bytes_per_cycle: float, schedule: Schedule,
              read_latency: int) -> InstrCost:
    """CONV: the CONV engine's sequence (rtl schedule) or the overlapped model."""
    return _engine_cost(_conv_sequential, _conv_cost, i, cfg, ddr_bytes_per_cycle, schedule, read_latency)


def stream_cost(i: Instruction, cfg: AccelConfig, ddr_bytes_per_cycle: float, schedule: Schedule,
                read_latency: int) -> InstrCost:
    """POOL, ADD and MOVE: the POOL/ADD/MOVE engine's sequence (rtl schedule) or the overlapped model."""
    return _engine_cost(_stream_sequential, _stream_cost, i, cfg, ddr_bytes_per_cycle, schedule, read_latency)


def end_cost(i: Instruction, cfg: AccelConfig, ddr_bytes_per_cycle: float, schedule: Schedule,
             read_latency: int) -> InstrCost:
    """END: its fetch and retirement (rtl schedule)."""
    _bpc, beat, lr = _timing(cfg, ddr_bytes_per_cycle, read_latency)
    end = int(round(_fetch_cycles(cfg, beat, lr))) + 2 if schedule is Schedule.RTL else INSTR_OVERHEAD
    return InstrCost(end, 0, 0, 0, 0, 0)


@cache
def cost_rule(opcode: Opcode) -> Callable[..., InstrCost]:
    """The timing rule an instruction's record names (``shiftpu.ops``: ``OpSpec.cost``, ``module:function``)."""
    from shiftpu.ops import OPS

    module, _, name = OPS[opcode].cost.partition(":")
    return getattr(import_module(module), name)


def instruction_cost(i: Instruction, cfg: AccelConfig, ddr_bytes_per_cycle: float,
                     schedule: Schedule = Schedule.RTL, read_latency: int = READ_LATENCY) -> InstrCost:
    """Estimated cost of one instruction on an accelerator with DDR bandwidth ``ddr_bytes_per_cycle`` and
    ``read_latency`` cycles from a read command to its first beat (writes answered as much later): the rule its
    opcode's record names."""
    return cost_rule(i.opcode)(i, cfg, ddr_bytes_per_cycle, schedule, read_latency)


def program_overhead(cfg: AccelConfig, ddr_bytes_per_cycle: float, schedule: Schedule = Schedule.RTL,
                     read_latency: int = READ_LATENCY) -> int:
    """Cycles of a program besides its instructions: the header fetch (command, L_r, beats) and its check."""
    if schedule is not Schedule.RTL:
        return INSTR_OVERHEAD
    beat = max(1.0, cfg.axi_bytes / bytes_per_cycle(cfg, ddr_bytes_per_cycle))
    return int(round(1 + read_latency + READ_ADDRESS_LATENCY - 1 + 64 / cfg.axi_bytes * beat + 1))


@dataclass(frozen=True)
class CostModel:
    """The performance model of one target: accelerator, DDR bandwidth and latency, schedule."""

    config: AccelConfig
    ddr_bytes_per_cycle: float
    schedule: Schedule = Schedule.RTL
    read_latency: int = READ_LATENCY  #: cycles from a read command to its first beat

    def cost(self, i: Instruction) -> InstrCost:
        return instruction_cost(i, self.config, self.ddr_bytes_per_cycle, self.schedule, self.read_latency)
