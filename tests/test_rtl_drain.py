"""The AXI4 side of the soft reset in Amaranth's simulator: the burst reader and writer draining what is in flight.

A drain starts at a random cycle while commands are being split, bursts are open and beats wait on the channels
(random backpressure everywhere, seeds printed). The slave side checks the AXI4 rules every cycle: no VALID falls
and no payload changes before READY, each W burst as long as its AW burst with WLAST on its last beat; after the
drain starts no new burst is addressed (the one already offered excepted), the reader drops every beat it is owed
and the writer sends its owed beats with WSTRB 0 (a data beat already waiting on W excepted), and ``idle`` comes
only once nothing is outstanding.
"""

from __future__ import annotations

import numpy as np
import pytest

amaranth = pytest.importorskip("amaranth")
from amaranth.sim import Simulator  # noqa: E402

from shiftpu.arch.config import AccelConfig  # noqa: E402
from shiftpu.hw.axi_master import BurstReader, BurstWriter  # noqa: E402
from shiftpu.hw.params import HwParams  # noqa: E402

pytestmark = pytest.mark.rtl

CFG = AccelConfig(pe_oc=4, pe_px=4, strip_width=16, line_buffer_bytes=8192, weight_buffer_bytes=4096,
                  acc_buffer_words=512, max_burst_beats=16)
#: Cycles a drain may take once it starts (bursts of at most 16 beats, a few outstanding, backpressure).
DRAIN_LIMIT = 2000


@pytest.mark.parametrize("seed", [1, 2, 3, 4, 5, 6])
def test_burst_writer_drain_completes_addressed_bursts_with_empty_strobes(seed):
    print(f"seed {seed}")
    rng = np.random.default_rng(seed)
    dut = BurstWriter(HwParams(CFG))
    drain_at = int(rng.integers(5, 160))
    commands = [(int(rng.integers(0, 3 * 4096 // 8)) * 8, int(rng.integers(1, 60))) for _ in range(8)]
    aw: list[int] = []  # lengths of the AW bursts taken
    w: list[tuple[int, int, int, int]] = []  # (cycle, data, strb, last) of the W beats taken
    facts = {"aw_after": 0, "held_at_drain": False, "idle_at": None, "open_b": 0}

    async def bench(ctx):
        next_cmd, beat, offering = 0, 0, False
        prev = None  # what the master offered and the slave did not take in the previous cycle
        for t in range(drain_at + DRAIN_LIMIT):
            draining = t >= drain_at
            ctx.set(dut.drain, int(draining))
            if draining and t == drain_at:
                facts["held_at_drain"] = bool(ctx.get(dut.holding))
            producer_live = not draining or bool(ctx.get(dut.holding))
            if producer_live:
                if next_cmd < len(commands):
                    ctx.set(dut.cmd.payload.addr, commands[next_cmd][0])
                    ctx.set(dut.cmd.payload.beats, commands[next_cmd][1])
                ctx.set(dut.cmd.valid, int(next_cmd < len(commands) and not draining))
                owed = sum(n for _, n in commands[:next_cmd])
                offering = offering or (beat < owed and rng.random() < 0.8)  # a stream beat stays until taken
                ctx.set(dut.data.valid, int(offering))
                ctx.set(dut.data.payload.data, 0x1000 + beat)
                ctx.set(dut.data.payload.strb, 0xFF)
            else:  # held at its power-on state; its outputs in the first cycle are whatever it had: ignored
                ctx.set(dut.cmd.valid, int(rng.random() < 0.5))
                ctx.set(dut.data.valid, int(rng.random() < 0.5))
                ctx.set(dut.data.payload.data, int(rng.integers(1, 1 << 16)))
            ctx.set(dut.awready, int(rng.random() < 0.5))
            ctx.set(dut.wready, int(rng.random() < 0.5))
            b_valid = facts["open_b"] > 0 and rng.random() < 0.5
            ctx.set(dut.bvalid, int(b_valid))
            ctx.set(dut.bresp, 0)
            now = {"aw": (ctx.get(dut.awvalid), ctx.get(dut.awaddr), ctx.get(dut.awlen)),
                   "w": (ctx.get(dut.wvalid), ctx.get(dut.wdata), ctx.get(dut.wstrb), ctx.get(dut.wlast))}
            if prev is not None:
                for ch in ("aw", "w"):
                    if prev[ch] is not None:
                        assert now[ch] == prev[ch], f"cycle {t}: {ch.upper()} changed while waiting"
            aw_fire = now["aw"][0] and ctx.get(dut.awready)
            w_fire = now["w"][0] and ctx.get(dut.wready)
            prev = {"aw": now["aw"] if now["aw"][0] and not aw_fire else None,
                    "w": now["w"] if now["w"][0] and not w_fire else None}
            if producer_live and ctx.get(dut.cmd.valid) and ctx.get(dut.cmd.ready):
                next_cmd += 1
            if aw_fire:
                aw.append(now["aw"][2] + 1)
                facts["aw_after"] += draining
            if w_fire:
                w.append((t, *now["w"][1:]))
                facts["open_b"] += now["w"][3]
                if producer_live and ctx.get(dut.data.ready):
                    offering, beat = False, beat + 1
            if b_valid and ctx.get(dut.bready):
                facts["open_b"] -= 1
            if draining and ctx.get(dut.idle):
                facts["idle_at"] = t
                assert facts["open_b"] == 0 and sum(aw) == len(w), f"cycle {t}: idle with bursts open"
                break
            await ctx.tick()

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()
    print(f"drain at cycle {drain_at}: {len(aw)} bursts, {len(w)} beats, a beat held: {facts['held_at_drain']}, "
          f"idle at cycle {facts['idle_at']}")
    assert facts["idle_at"] is not None, "the drain never ended"
    assert facts["aw_after"] <= 1  # only the burst already offered
    k = 0
    for n in aw:
        assert [b[3] for b in w[k:k + n]] == [0] * (n - 1) + [1]
        k += n
    after = [(d, s) for c, d, s, _ in w if c >= drain_at]
    data_after = [b for b in after if b != (0, 0)]
    assert len(data_after) <= int(facts["held_at_drain"])  # the beat waiting on W, unchanged
    assert all(d >= 0x1000 for d, _ in data_after)
    before = [d for c, d, _, _ in w if c < drain_at] + [d for d, _ in data_after]
    assert before == [0x1000 + i for i in range(len(before))]  # the data beats in order, none lost or repeated


@pytest.mark.parametrize("seed", [1, 2, 3, 4, 5, 6])
def test_burst_reader_drain_drops_every_beat_it_is_owed(seed):
    print(f"seed {seed}")
    rng = np.random.default_rng(seed)
    dut = BurstReader(HwParams(CFG))
    drain_at = int(rng.integers(5, 120))
    commands = [(int(rng.integers(0, 3 * 4096 // 8)) * 8, int(rng.integers(1, 90))) for _ in range(8)]
    facts = {"ar_after": 0, "owed_at_drain": 0, "idle_at": None, "dropped": 0}

    async def bench(ctx):
        next_cmd = 0
        pending: list[tuple[int, int]] = []  # (address, last) of the R beats the slave owes
        prev_ar = None
        r_offer = False
        for t in range(drain_at + DRAIN_LIMIT):
            draining = t >= drain_at
            ctx.set(dut.drain, int(draining))
            if t == drain_at:
                facts["owed_at_drain"] = len(pending)
            if next_cmd < len(commands):
                ctx.set(dut.cmd.payload.addr, commands[next_cmd][0])
                ctx.set(dut.cmd.payload.beats, commands[next_cmd][1])
            ctx.set(dut.cmd.valid, int(next_cmd < len(commands) and (not draining or rng.random() < 0.5)))
            ctx.set(dut.data.ready, int(rng.random() < 0.5))
            ctx.set(dut.arready, int(rng.random() < 0.5))
            r_offer = bool(pending) and (r_offer or rng.random() < 0.6)  # the slave keeps a beat until taken
            ctx.set(dut.rvalid, int(r_offer))
            ctx.set(dut.rdata, pending[0][0] if pending else 0)
            ctx.set(dut.rlast, pending[0][1] if pending else 0)
            ar = (ctx.get(dut.arvalid), ctx.get(dut.araddr), ctx.get(dut.arlen))
            if prev_ar is not None:
                assert ar == prev_ar, f"cycle {t}: AR changed while waiting"
            ar_fire = ar[0] and ctx.get(dut.arready)
            prev_ar = ar if ar[0] and not ar_fire else None
            if draining:
                assert not ctx.get(dut.data.valid), f"cycle {t}: a beat offered to the reset engines"
                assert ctx.get(dut.rready), f"cycle {t}: R not drained"
            if ctx.get(dut.cmd.valid) and ctx.get(dut.cmd.ready) and not draining:
                next_cmd += 1
            new = [(ar[1] + 8 * k, int(k == ar[2])) for k in range(ar[2] + 1)] if ar_fire else []
            facts["ar_after"] += bool(ar_fire and draining)
            if r_offer and ctx.get(dut.rready):
                pending.pop(0)
                r_offer = False
                facts["dropped"] += draining
            pending.extend(new)
            if draining and ctx.get(dut.idle):
                facts["idle_at"] = t
                assert not pending, f"cycle {t}: idle with {len(pending)} beats still to come"
                break
            await ctx.tick()

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()
    print(f"drain at cycle {drain_at}: {facts['owed_at_drain']} beats owed then, {facts['dropped']} dropped, idle "
          f"at cycle {facts['idle_at']}")
    assert facts["idle_at"] is not None, "the drain never ended"
    assert facts["ar_after"] <= 1  # only the burst already offered
    assert facts["dropped"] >= facts["owed_at_drain"]
