"""Pipeline depths of the generated RTL that its cycle count depends on.

The RTL generator (``shiftpu.hw``) builds its pipelines with these depths and the performance model
(``shiftpu.compiler.perf``) counts the same cycles, so a deeper pipeline is one change here, seen by both.
Each figure is in clock cycles.
"""

from __future__ import annotations

#: Sequencer: cycles of CHECK between an instruction's LATCH and its DECODE, in which the registered checks
#: (buffer needs: products of several fields) settle.
DECODE_CHECK = 8

#: AXI burst engines: cycles from a transfer command being taken to its first burst's address (the command
#: register, then the burst length settles in a register).
READ_ADDRESS_LATENCY = 3

#: Sequencer: cycles from DECODE to the engine's start (a registered pulse, in RUN's first cycle).
ENGINE_START = 1
#: Engines: cycles from the end of an instruction's work to the sequencer seeing it done (a registered flag).
ENGINE_DONE = 1

#: Register stages of a requantiser (sum and clamped shift amounts; the shift amount for the value's sign; three
#: stages cutting the output window out of the value with the sticky and overflow bits and the rounding decision;
#: the formats' bounds; saturation, increment, activation).
REQUANT_LATENCY = 6

#: CONV engine: cycles after the engine starts in which the per-instruction products (row and plane sizes,
#: weight strides, base addresses) settle in their registers.
CONV_SETUP = 4
#: CONV engine: cycles of TILE_SETUP, after TILE, in which the per-(strip, output tile) values settle.
CONV_TILE_SETUP = 6
#: CONV engine: cycles of IC_SETUP, after IC, in which the per-input-tile values settle (blocks, row slot sizes,
#: whether the next row prefetches); the later rows of a single input tile reuse them and spend 1 cycle.
CONV_IC_SETUP = 7
#: CONV engine: cycles of W_SETUP before each weight-run command, in which its DDR address settles.
CONV_W_SETUP = 2
#: CONV engine: pipeline stages from the loop counters to the accumulator update (address sums, line and
#: weight buffer reads with their output registers, operand selection, shift terms, the row adder tree's two
#: registered stages). DRAIN lasts this long.
CONV_COMPUTE_LATENCY = 9
#: CONV loader's read issuer: cycles from a row's loop position to its read command (row number, products,
#: address sums).
CONV_ISSUE_LATENCY = 5
#: CONV line loader: cycles from the engine's kick to the loader and its read issuer starting (the kick and its
#: row are registered on the way in).
LOADER_KICK_LATENCY = 1
#: CONV store: cycles of S_ADDR before each channel group's write command (its DDR address settles).
CONV_STORE_SETUP = 5
#: CONV store: stages from an accumulator read to the beat entering the output FIFO (buffer read, lane
#: selection, requantiser; the lane placement is on the way into the FIFO).
CONV_STORE_LATENCY = 2 + REQUANT_LATENCY

#: POOL/ADD/MOVE engine: cycles of SETTLE before each LOAD, in which the segment's (or kernel row's) source
#: columns and row settle in their registers.
ELT_SETTLE = 3
#: POOL/ADD/MOVE read issuer: cycles from a command's loop position to the command (Q_CALC).
ELT_ISSUE_LATENCY = 4
#: POOL/ADD/MOVE engine: stages from an output beat's buffer read to the beat entering the output queue (buffer
#: read with the B operand registered, the block RAMs' output registers, lanes and ADD's shifted terms, the
#: requantiser).
ELT_OUT_LATENCY = 3 + REQUANT_LATENCY


def pool_tree_stages(max_kernel: int) -> int:
    """POOL: register stages of the window-maximum tree over ``max_kernel`` words (at least one); the running
    maximum's read-modify-write follows one cycle later, and the last kernel row of a segment waits this many
    cycles (P_DRAIN) before the segment's output reads so that they see its last merge."""
    return max(1, (max_kernel - 1).bit_length())
