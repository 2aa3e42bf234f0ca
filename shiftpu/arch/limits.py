"""What one accelerator instance can execute: the capacity checks on an instruction.

The compiler tiles so that these hold; the golden model and the RTL refuse an instruction that breaks
them with ``ErrorCode.BAD_FIELD``. One function, used by all three.
"""

from __future__ import annotations

from shiftpu.arch.config import AccelConfig
from shiftpu.arch.isa import Dataflow, Instruction, Opcode
from shiftpu.arch.layout import ceil_div, weight_lanes


def line_buffer_need(instr: Instruction, cfg: AccelConfig) -> int:
    """Bytes of line buffer a CONV needs: kh rows x strip input columns x channel tile (rounded to blocks)."""
    channels = instr.oc_tile if instr.depthwise else instr.ic_tile
    cols = (instr.strip_w - 1) * instr.stride + instr.kw
    return instr.kh * cols * ceil_div(channels, cfg.channel_block) * cfg.channel_block


def weight_buffer_need(instr: Instruction, cfg: AccelConfig) -> int:
    """Bytes of weight buffer a CONV needs for one (output tile, input tile): the input tile's channels rounded up
    to whole lane groups (:func:`~shiftpu.arch.layout.weight_lanes`), as the weight runs hold them."""
    lanes = weight_lanes(instr.dataflow, cfg)
    per_oc = 1 if instr.depthwise else ceil_div(instr.ic_tile, lanes) * lanes
    return ceil_div(instr.oc_tile * per_oc * instr.kh * instr.kw * cfg.weight_code.bits, 8)


def acc_buffer_need(instr: Instruction, cfg: AccelConfig) -> int:
    """Accumulators a CONV needs: output tile x strip width rounded up to whole pixel groups (pe_px)."""
    return instr.oc_tile * ceil_div(instr.strip_w, cfg.pe_px) * cfg.pe_px


def line_buffer_words(cfg: AccelConfig) -> int:
    """Line buffer capacity in words (one channel block of one pixel each)."""
    return cfg.line_buffer_bytes // cfg.channel_block


def acc_entries(cfg: AccelConfig) -> int:
    """Accumulator buffer entries, each pe_oc x pe_px accumulators (acc_buffer_words in all)."""
    return max(1, cfg.acc_buffer_words // (cfg.pe_oc * cfg.pe_px))


def prefetches_rows(kh: int, stride: int, blocks: int, in_cols: int, single_tile: bool, cfg: AccelConfig) -> bool:
    """Whether the CONV engine loads the next output row's input rows while the current row computes.

    Needs one input tile (K-row reuse) and ``kh + min(stride, kh)`` row slots of ``blocks`` x ``in_cols``
    words in the line buffer. Not a limit: without it the load waits for the computation.
    """
    return single_tile and (kh + min(stride, kh)) * blocks * in_cols <= line_buffer_words(cfg)


def double_buffers_acc(out_blocks: int, pixel_groups: int, cfg: AccelConfig) -> bool:
    """Whether a row's accumulators (pe_oc blocks x pe_px groups entries) fit half the accumulator buffer.

    Then the next row computes into one half while the store streams the previous row out of the other.
    Not a limit: otherwise the computation waits for the store.
    """
    return out_blocks * pixel_groups <= acc_entries(cfg) // 2


def _dataflow_violation(instr: Instruction, cfg: AccelConfig) -> str | None:
    """Why the dataflow or the input-channel tiling of a CONV does not fit the PE array, or None.

    Input tiles start on channel-block boundaries; as pe_px <= channel_block for INPUT_CHANNEL (both
    powers of two), they then also start on multiples of pe_px, which that dataflow's adder tree needs.
    """
    cb = cfg.channel_block
    if instr.dataflow is Dataflow.INPUT_CHANNEL and cfg.pe_px > cb:
        return f"INPUT_CHANNEL needs pe_px {cfg.pe_px} <= channel_block {cb}"
    if instr.depthwise and cfg.pe_oc > cb:
        return f"DEPTHWISE needs pe_oc {cfg.pe_oc} <= channel_block {cb}"
    if instr.ic_tile < instr.in_c and instr.ic_tile % cb:
        return f"ic_tile {instr.ic_tile} with several input tiles is not a multiple of channel_block {cb}"
    return None


def violation(instr: Instruction, cfg: AccelConfig) -> str | None:
    """Why ``instr`` cannot run on an accelerator built from ``cfg``, or None if it can."""
    if instr.opcode is Opcode.END:
        return None
    if instr.out_bits > cfg.act_bits:
        return f"out_bits {instr.out_bits} exceeds the accelerator's act_bits {cfg.act_bits}"
    if instr.opcode in (Opcode.CONV, Opcode.POOL) and max(instr.kh, instr.kw) > cfg.max_kernel:
        return f"kernel {instr.kh}x{instr.kw} exceeds max_kernel {cfg.max_kernel}"
    if instr.opcode is not Opcode.CONV:
        return None
    if instr.strip_w > cfg.strip_width:
        return f"strip_w {instr.strip_w} exceeds strip_width {cfg.strip_width}"
    if instr.oc_tile % cfg.pe_oc:
        return f"oc_tile {instr.oc_tile} is not a multiple of pe_oc {cfg.pe_oc}"
    if instr.depthwise and instr.ic_tile != instr.oc_tile:
        return f"depthwise CONV needs ic_tile == oc_tile (got {instr.ic_tile} and {instr.oc_tile})"
    problem = _dataflow_violation(instr, cfg)
    if problem:
        return problem
    need = line_buffer_need(instr, cfg)
    if need > cfg.line_buffer_bytes:
        return f"line buffer needs {need} bytes, has {cfg.line_buffer_bytes}"
    need = weight_buffer_need(instr, cfg)
    if need > cfg.weight_buffer_bytes:
        return f"weight buffer needs {need} bytes, has {cfg.weight_buffer_bytes}"
    need = acc_buffer_need(instr, cfg)
    if need > cfg.acc_buffer_words:
        return f"accumulator buffer needs {need} words, has {cfg.acc_buffer_words}"
    return None
