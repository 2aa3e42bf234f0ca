"""Power: measured from (here: fake) PMBus rails when the board has them, else the documented estimate."""

from __future__ import annotations

import sys
import time
import types
from dataclasses import replace

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shiftpu.boards import load_board
from shiftpu.sw.power import PowerReport, PowerSource, RailSampler, estimate_power, estimate_power_at_fps


def _board(static_w: float, pe: int):
    """The PYNQ-Z2 with a chosen static power and a pe x pe array (so the figures below do not follow its file)."""
    b = load_board("pynq-z2")
    return replace(b, static_power_w=static_w,
                   accel=b.accel.with_(pe_oc=pe, pe_px=pe, strip_width=8 * pe, acc_buffer_words=64 * pe * pe))


def test_estimate_is_static_plus_energy_per_operation():
    # by hand: 2.0 W + 0.02 W per GOP/s x 10 GOP/s = 2.0 + 0.2, whatever the array's size
    rep = estimate_power(_board(2.0, 16), gops=10.0)
    assert rep == PowerReport(2.2, PowerSource.ESTIMATED, "static 2.0 W (board file) + dynamic 0.200 W "
                                                          "(0.02 W per GOP/s x 10.00 GOP/s)",
                              static_w=2.0, dynamic_w=0.2)
    assert estimate_power(_board(2.0, 4), gops=10.0).watts == 2.2
    # 0.5 GMAC per frame at 20 frames/s: the same 10 GOP/s
    assert estimate_power_at_fps(_board(2.0, 16), 0.5e9, 20.0) == rep
    # 1.5 W + 0.02 x 12.5 = 1.75; 0.02 x 3.1 = 0.062 W reported in mW
    assert estimate_power(_board(1.5, 8), gops=12.5).watts == 1.75
    assert estimate_power(_board(1.5, 8), gops=3.1).watts == 1.562
    assert estimate_power(_board(1.5, 8), gops=0.0).watts == 1.5  # idle fabric: the static power alone


@given(static=st.floats(0.5, 20.0), gops=st.floats(0.0, 1000.0), pe=st.sampled_from([4, 8, 16]))
def test_estimate_grows_with_activity(static, gops, pe):
    watts = estimate_power(_board(static, pe), gops).watts
    assert watts >= round(static, 3)
    assert estimate_power(_board(static, pe), 2 * gops).watts >= watts


def test_board_without_rails_falls_back_to_the_estimate():
    board = load_board("pynq-z2")
    assert board.power_rails == ()
    with RailSampler(board) as rails:
        pass
    assert not rails.available
    assert rails.report(1.0).source is PowerSource.ESTIMATED


def test_rails_are_sampled_and_summed(monkeypatch):
    board = load_board("ultra96v2")

    def rail(watts):
        return types.SimpleNamespace(power=types.SimpleNamespace(value=watts))

    fake = {name: rail(0.5) for name in board.power_rails[:2]}
    fake["OTHER"] = rail(100.0)  # not a rail of this board: not summed
    fake[board.power_rails[2]] = types.SimpleNamespace(power=None)  # a rail without a power sensor
    monkeypatch.setitem(sys.modules, "pynq", types.SimpleNamespace(get_rails=lambda: fake))
    with RailSampler(board, period_s=0.01) as rails:
        time.sleep(0.05)
    rep = rails.report(1.0)
    assert rep.source is PowerSource.MEASURED and rep.watts == pytest.approx(1.0)
    assert "INT" in rep.detail
