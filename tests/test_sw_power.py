"""Power: measured from (here: fake) PMBus rails when the board has them, else the documented estimate."""

from __future__ import annotations

import sys
import time
import types

import pytest

from shiftpu.boards import load_board
from shiftpu.sw.power import DYNAMIC_W_PER_GOPS, PowerSource, RailSampler, estimate_power


def test_estimate_is_static_plus_activity_scaled_by_array_size():
    board = load_board("zcu104")  # 16 x 16 PE array: scale 4
    rep = estimate_power(board, gops=10.0)
    assert rep.source is PowerSource.ESTIMATED
    assert rep.watts == pytest.approx(board.static_power_w + DYNAMIC_W_PER_GOPS * 10.0 * 4)
    small = load_board("pynq-z2")  # 8 x 8: scale 1
    assert estimate_power(small, gops=10.0).watts == pytest.approx(small.static_power_w + DYNAMIC_W_PER_GOPS * 10.0)
    assert "static" in rep.detail and "GOP/s" in rep.detail


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
