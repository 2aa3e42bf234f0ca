"""The full randomised RTL regression (``make test-slow``): many seeds, larger layers, several configs.

Each config is one Verilator build (one to three minutes); every program is compared with the golden
model over the whole activation arena.
"""

from __future__ import annotations

import pytest

pytest.importorskip("cocotb")
pytest.importorskip("amaranth")

from rtl_support import LAYER_KINDS, SMALL, assert_bit_exact, random_program  # noqa: E402

from shiftpu.arch.config import AccelConfig  # noqa: E402
from shiftpu.arch.numerics import WeightCode  # noqa: E402
from shiftpu.sim.rtl import RtlAccelerator, SimMemory  # noqa: E402

pytestmark = [pytest.mark.rtl, pytest.mark.slow]

CONFIGS = {
    "small-4x4": SMALL,
    "default-8x8": AccelConfig(),
    "two-term-2x4-axi32": AccelConfig(pe_oc=2, pe_px=4, weight_code=WeightCode.SHIFT8_TWO_TERM, strip_width=8,
                                      axi_data_bits=32, max_burst_beats=4, line_buffer_bytes=4096,
                                      weight_buffer_bytes=2048, acc_buffer_words=256),
    # more output rows than channels per beat: each output lane chooses among pe_oc / cb rows
    "wide-oc-8x4-axi32": AccelConfig(pe_oc=8, pe_px=4, strip_width=8, axi_data_bits=32, max_burst_beats=8,
                                     line_buffer_bytes=8192, weight_buffer_bytes=4096, acc_buffer_words=512),
    # PEs with input-channel lanes: 8 lanes filling the 64-bit channel block, with the two-term codes and
    # 4-bit activations; and the 8x8x8 array of 512 MACs per cycle
    "lanes-two-term-act4-4x4x8": SMALL.with_(pe_ic=8, dsp_lanes=2, weight_code=WeightCode.SHIFT8_TWO_TERM,
                                              act_bits=4),
    "lanes-8x8x8-dsp4": AccelConfig(pe_ic=8, dsp_lanes=4),
}


@pytest.fixture(scope="module", params=list(CONFIGS))
def rtl(request):
    return RtlAccelerator(CONFIGS[request.param])


def _kinds(cfg: AccelConfig, seed: int) -> list[str]:
    # the dataflows this config maps (arch/limits.py): DEPTHWISE needs pe_oc <= cb, INPUT_CHANNEL pe_px <= cb
    usable = [k for k in LAYER_KINDS if not (k == "dw" and cfg.pe_oc > cfg.channel_block)
              and not (k == "ic" and cfg.pe_px > cfg.channel_block)]
    return [usable[(seed + k) % len(usable)] for k in range(8)]


@pytest.mark.parametrize("seed", range(100, 112))
def test_random_programs(rtl, seed):
    assert_bit_exact(rtl, random_program(rtl.config, seed, _kinds(rtl.config, seed), max_hw=20, max_c=40))


@pytest.mark.parametrize("seed", range(200, 204))
def test_random_programs_under_a_ddr_latency(rtl, seed):
    """The reads queued ahead meet a memory that answers 17 to 67 cycles late (the compiled RAM's latency mode)."""
    late = RtlAccelerator(rtl.config, memory=SimMemory.COMPILED, extra_read_latency=17 + 50 * (seed % 2))
    assert_bit_exact(late, random_program(rtl.config, seed, _kinds(rtl.config, seed), max_hw=20, max_c=40))
