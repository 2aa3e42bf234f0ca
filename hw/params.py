"""Hardware sizes derived from an AccelConfig: buffer depths, word widths, counter widths.

Every generator module reads its sizes from here, so one AccelConfig gives one accelerator and the
co-simulation, the synthesis estimate and the documentation all see the same numbers.
"""

from __future__ import annotations

from dataclasses import dataclass

from shiftpu.arch import limits
from shiftpu.arch.config import AccelConfig
from shiftpu.arch.isa import INSTR_BITS
from shiftpu.arch.layout import ceil_div
from shiftpu.errors import ShiftpuError

#: Width of the byte counts and beat counts of one AXI transfer command.
BEATS_BITS = 24
#: Width of one signed activation inside the datapath (int8 and uint8 both fit).
ACT_WIDTH = 9
#: Width of the ADD operands after their alignment shift (8 bits << up to 31).
ADD_WIDTH = 8 + 31 + 2


def log2(n: int) -> int:
    """Bits to index ``n`` things (ceil(log2 n)); for the powers of two the generator uses, exactly log2."""
    return (n - 1).bit_length()


class HwConfigError(ShiftpuError, ValueError):
    """The generator cannot build an accelerator for this AccelConfig."""


@dataclass(frozen=True)
class HwParams:
    """Derived sizes of the generated accelerator."""

    cfg: AccelConfig

    def __post_init__(self) -> None:
        cfg = self.cfg
        if self.lb_words < cfg.max_kernel or self.wb_depth < 1:
            raise HwConfigError("line or weight buffer smaller than one kernel")

    @property
    def beat_bits(self) -> int:
        return self.cfg.axi_data_bits

    @property
    def beat_bytes(self) -> int:
        return self.cfg.axi_bytes

    @property
    def cb(self) -> int:
        """Channels per DDR channel block (one beat)."""
        return self.cfg.channel_block

    @property
    def addr_bits(self) -> int:
        return self.cfg.axi_addr_bits

    @property
    def step_bits(self) -> int:
        """One weight step: the codes of pe_oc output channels for one (input channel, ky, kx)."""
        return self.cfg.pe_oc * self.cfg.weight_code.bits

    @property
    def lb_banks(self) -> int:
        """Line buffer banks: 2 x pe_px, so pe_px columns at stride 1 or 2 never share a bank."""
        return 2 * self.cfg.pe_px

    @property
    def lb_words(self) -> int:
        """Line buffer capacity in words of one channel block of one pixel."""
        return limits.line_buffer_words(self.cfg)

    @property
    def lb_bank_depth(self) -> int:
        return ceil_div(self.lb_words, self.lb_banks)

    @property
    def w_lanes(self) -> int:
        """Weight steps written into the weight buffer per cycle: all steps of one beat (1 if a step is wider)."""
        return max(1, self.beat_bits // self.step_bits)

    @property
    def wb_read_steps(self) -> int:
        """Consecutive weight steps read per cycle: pe_px input channels (INPUT_CHANNEL) or pe_ic (PIXEL)."""
        return max(self.cfg.pe_px, self.cfg.pe_ic)

    @property
    def wb_banks(self) -> int:
        """Weight buffer banks: enough for wb_read_steps steps read and w_lanes steps written per cycle."""
        return max(self.wb_read_steps, self.w_lanes)

    @property
    def wb_depth(self) -> int:
        """Weight buffer capacity in steps."""
        return self.cfg.weight_buffer_bytes * 8 // self.step_bits

    @property
    def acc_entries(self) -> int:
        """Accumulator buffer entries, each pe_oc x pe_px accumulators: acc_buffer_words in all.

        The contract counts a strip in whole pixel groups (oc_tile x ceil(strip_w / pe_px) x pe_px <=
        acc_buffer_words), so every tiling it allows fits.
        """
        return limits.acc_entries(self.cfg)

    @property
    def out_group(self) -> int:
        """Output channels written per beat by the CONV output stage."""
        return min(self.cfg.pe_oc, self.cb)

    @property
    def seg_width(self) -> int:
        """Output columns per segment of POOL/ADD/MOVE."""
        return self.cfg.strip_width

    @property
    def elt_depth(self) -> int:
        """Words of the POOL/ADD/MOVE segment buffer: one input row segment of a strided window."""
        return 2 * self.seg_width + self.cfg.max_kernel

    @property
    def instr_beats(self) -> int:
        return INSTR_BITS // self.beat_bits
