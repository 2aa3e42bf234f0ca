"""Unit tests of the generated blocks against Python references, in Amaranth's own simulator.

Randomised with printed seeds; the references are shiftpu.arch.numerics (requantisation, shift codes)
and the AXI4 rules (burst length, 4 KiB boundary, order of data).
"""

from __future__ import annotations

import numpy as np
import pytest

amaranth = pytest.importorskip("amaranth")
from amaranth.sim import Simulator  # noqa: E402

from shiftpu.arch.config import AccelConfig  # noqa: E402
from shiftpu.arch.latency import REQUANT_LATENCY  # noqa: E402
from shiftpu.arch.numerics import SHIFT4_VALUES, ActFormat, Activation, WeightCode, requantize  # noqa: E402
from shiftpu.hw.axi_master import BurstReader, BurstWriter  # noqa: E402
from shiftpu.hw.params import ADD_WIDTH, HwParams  # noqa: E402
from shiftpu.hw.pe import ShiftAddPE  # noqa: E402
from shiftpu.hw.postproc import Requantizer  # noqa: E402

pytestmark = pytest.mark.rtl


def _requant_vectors(rng: np.random.Generator, n: int, value_bits: int = 32):
    # mostly useful shifts, a quarter over the whole 8-bit field (the RTL clamps what cannot matter)
    shift = np.where(rng.random(n) < 0.75, rng.integers(-6, 40, size=n), rng.integers(-128, 128, size=n))
    base = rng.integers(-(1 << 31), 1 << 31, size=n) << (value_bits - 32) >> rng.integers(0, value_bits - 1, size=n)
    # a third of the values are exact ties (x.5 after the shift), some saturate, some are 0
    tie = np.where(shift > 0, (base << np.maximum(shift, 0)) + (1 << np.maximum(shift - 1, 0)), base)
    acc = np.where(rng.random(n) < 0.33, tie, base)
    acc = np.clip(acc, -(1 << (value_bits - 1)), (1 << (value_bits - 1)) - 1)
    acc[:4] = [-(1 << (value_bits - 1)), (1 << (value_bits - 1)) - 1, -1, 1]
    bias = np.where(rng.random(n) < 0.1, rng.integers(-(1 << 31), 1 << 31, size=n),
                    rng.integers(-(1 << 20), 1 << 20, size=n) * (rng.random(n) < 0.5))
    bias[:4] = [-(1 << 31), (1 << 31) - 1, 0, 0]
    act = rng.integers(0, 3, size=n)
    leaky = rng.integers(0, 16, size=n)
    bits = rng.choice([4, 8], size=n)
    signed = rng.integers(0, 2, size=n)
    return acc, bias, shift, act, leaky, bits, signed


@pytest.mark.parametrize("value_bits", [32, ADD_WIDTH])
def test_requantizer_matches_numerics(value_bits):
    """One value per cycle in; each comes out REQUANT_LATENCY cycles later."""
    seed = 20261125
    print(f"seed {seed}")
    rng = np.random.default_rng(seed)
    vec = _requant_vectors(rng, 800, value_bits)
    dut = Requantizer(value_bits)
    assert dut.latency == REQUANT_LATENCY
    got = []

    async def bench(ctx):
        n = len(vec[0])
        for t in range(n + dut.latency):
            if t < n:
                a, b, s, act, lk, bits, sg = (int(v[t]) for v in vec)
                for port, value in ((dut.value, a), (dut.bias, b), (dut.shift, s), (dut.act, act),
                                    (dut.leaky_shift, lk), (dut.out_bits, bits), (dut.out_signed, sg)):
                    ctx.set(port, value)
            if t >= dut.latency:
                got.append(ctx.get(dut.out))
            await ctx.tick()

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()
    acc, bias, shift, act, leaky, bits, signed = vec
    assert len(got) == len(acc)
    for k in range(len(acc)):
        fmt = ActFormat(int(bits[k]), bool(signed[k]))
        want = requantize(np.int64(acc[k]) + bias[k], int(shift[k]), fmt, Activation(int(act[k])), int(leaky[k]))
        assert got[k] == int(want) & 0xFF, (k, acc[k], bias[k], shift[k], act[k], leaky[k], fmt)


@pytest.mark.parametrize("code", [WeightCode.SHIFT4, WeightCode.SHIFT8_TWO_TERM])
def test_shift_add_pe_is_multiplication(code):
    dut = ShiftAddPE(code)
    codes = [c for c in range(1 << code.bits) if (c & 0xF) != 8 and (c >> 4) != 8]
    acts = [-256, -128, -1, 0, 1, 77, 127, 255]
    got = {}

    async def bench(ctx):
        for c in codes:
            for a in acts:
                ctx.set(dut.code, c)
                ctx.set(dut.act, a)
                got[c, a] = ctx.get(dut.term)

    sim = Simulator(dut)
    sim.add_testbench(bench)
    sim.run()
    for (c, a), term in got.items():
        w = int(SHIFT4_VALUES[c & 0xF]) + (int(SHIFT4_VALUES[c >> 4]) if code is WeightCode.SHIFT8_TWO_TERM else 0)
        assert term == a * w, (c, a)


CFG = AccelConfig(pe_oc=4, pe_px=4, strip_width=16, line_buffer_bytes=8192, weight_buffer_bytes=4096,
                  acc_buffer_words=512, max_burst_beats=16)


def test_burst_reader_splits_bursts_and_keeps_order():
    """AR bursts never exceed max_burst_beats nor cross 4 KiB; R data arrives in address order, also when a
    command is taken while the data of earlier ones is still on the way (reads queued ahead)."""
    seed = 7
    print(f"seed {seed}")
    rng = np.random.default_rng(seed)
    p = HwParams(CFG)
    dut = BurstReader(p)
    commands = [(int(rng.integers(0, 3 * 4096 // 8)) * 8, int(rng.integers(1, 90))) for _ in range(12)]
    commands.append((4096 - 8 * 3, 20))  # straddles a 4 KiB boundary
    commands.append((3 * 4096 - 8 * 40, 70))  # full bursts up to the boundary, then one that ends at it
    commands.append((4 * 4096 - 8 * 16, 40))  # a full burst that ends exactly at the boundary
    bursts: list[tuple[int, int]] = []
    received: list[int] = []
    pending: list[int] = []
    queued = [0]  # commands taken while beats of earlier ones were still to come
    total = sum(n for _, n in commands)

    async def bench(ctx):
        next_cmd = 0
        for _ in range(20000):
            if len(received) == total:
                break
            if next_cmd < len(commands):
                ctx.set(dut.cmd.payload.addr, commands[next_cmd][0])
                ctx.set(dut.cmd.payload.beats, commands[next_cmd][1])
            ctx.set(dut.cmd.valid, int(next_cmd < len(commands)))
            ctx.set(dut.arready, int(rng.random() < 0.7))
            r_valid = bool(pending) and rng.random() < 0.8
            ctx.set(dut.rvalid, int(r_valid))
            ctx.set(dut.rdata, pending[0] if pending else 0)
            ctx.set(dut.data.ready, int(rng.random() < 0.8))
            if ctx.get(dut.cmd.valid) and ctx.get(dut.cmd.ready):
                queued[0] += len(received) < sum(n for _, n in commands[:next_cmd])
                next_cmd += 1
            if ctx.get(dut.arvalid) and ctx.get(dut.arready):
                addr, n = ctx.get(dut.araddr), ctx.get(dut.arlen) + 1
                bursts.append((addr, n))
                new_beats = [addr + 8 * k for k in range(n)]
            else:
                new_beats = []
            if r_valid and ctx.get(dut.rready):
                pending.pop(0)
            if ctx.get(dut.data.valid) and ctx.get(dut.data.ready):
                received.append(ctx.get(dut.data.payload))
            pending.extend(new_beats)
            await ctx.tick()

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()
    expected = [a + 8 * k for a, n in commands for k in range(n)]
    assert received == expected
    assert queued[0] > 0, "no command was queued behind another's data"
    for addr, n in bursts:
        assert 1 <= n <= CFG.max_burst_beats
        assert addr // 4096 == (addr + 8 * n - 1) // 4096, f"burst at 0x{addr:x} x{n} crosses 4 KiB"
    # and each burst is as long as it may be: the rest of the command, max_burst_beats, or up to the boundary
    expected_bursts = []
    for addr, n in commands:
        while n:
            beats = min(n, CFG.max_burst_beats, (4096 - addr % 4096) // 8)
            expected_bursts.append((addr, beats))
            addr, n = addr + 8 * beats, n - beats
    assert bursts == expected_bursts


def test_burst_writer_bursts_strobes_and_responses():
    """AW bursts follow the same split as reads; WLAST ends each burst; data and strobes arrive in order."""
    seed = 8
    print(f"seed {seed}")
    rng = np.random.default_rng(seed)
    p = HwParams(CFG)
    dut = BurstWriter(p)
    commands = [(int(rng.integers(0, 3 * 4096 // 8)) * 8, int(rng.integers(1, 60))) for _ in range(8)]
    commands.append((2 * 4096 - 8 * 5, 12))  # straddles a 4 KiB boundary
    beats = [(a + 8 * k, int(rng.integers(0, 256))) for a, n in commands for k in range(n)]
    aw_bursts: list[tuple[int, int]] = []
    w_beats: list[tuple[int, int, int]] = []  # (data, strb, last)
    open_bursts = [0]  # bursts whose last beat was written and whose response is not yet taken

    async def bench(ctx):
        next_cmd = 0
        next_beat = 0
        for _ in range(20000):
            if next_cmd == len(commands) and next_beat == len(beats) and ctx.get(dut.idle):
                break
            if next_cmd < len(commands):
                ctx.set(dut.cmd.payload.addr, commands[next_cmd][0])
                ctx.set(dut.cmd.payload.beats, commands[next_cmd][1])
            # the producer offers beats of commands already accepted
            accepted_beats = sum(n for _, n in commands[:next_cmd])
            offer = next_beat < accepted_beats and rng.random() < 0.8
            ctx.set(dut.cmd.valid, int(next_cmd < len(commands)))
            ctx.set(dut.data.valid, int(offer))
            if next_beat < len(beats):
                ctx.set(dut.data.payload.data, beats[next_beat][0])
                ctx.set(dut.data.payload.strb, beats[next_beat][1])
            ctx.set(dut.awready, int(rng.random() < 0.6))
            ctx.set(dut.wready, int(rng.random() < 0.7))
            b_valid = open_bursts[0] > 0 and rng.random() < 0.5
            ctx.set(dut.bvalid, int(b_valid))
            if ctx.get(dut.cmd.valid) and ctx.get(dut.cmd.ready):
                next_cmd += 1
            if ctx.get(dut.awvalid) and ctx.get(dut.awready):
                aw_bursts.append((ctx.get(dut.awaddr), ctx.get(dut.awlen) + 1))
            if b_valid and ctx.get(dut.bready):
                open_bursts[0] -= 1
            if ctx.get(dut.wvalid) and ctx.get(dut.wready):
                w_beats.append((ctx.get(dut.wdata), ctx.get(dut.wstrb), ctx.get(dut.wlast)))
                open_bursts[0] += w_beats[-1][2]
                next_beat += 1
            await ctx.tick()

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()
    assert open_bursts[0] == 0, "idle before every write response was taken"
    assert [(d, s) for d, s, _ in w_beats] == beats
    expected_addrs = [a for a, _ in beats]
    assert sum(n for _, n in aw_bursts) == len(beats)
    k = 0
    for addr, n in aw_bursts:
        assert 1 <= n <= CFG.max_burst_beats
        assert addr // 4096 == (addr + 8 * n - 1) // 4096, f"burst at 0x{addr:x} x{n} crosses 4 KiB"
        assert addr == expected_addrs[k]
        assert [w[2] for w in w_beats[k:k + n]] == [0] * (n - 1) + [1]
        k += n


@pytest.mark.parametrize("a_bits,b_bits", [(16, 32), (6, 32), (17, 24), (24, 30), (13, 45), (32, 6), (13, 13)])
def test_pipelined_product_equals_the_product_three_cycles_later(a_bits, b_bits):
    """Every 17-bit part of the wide operand, the top one included, and three parts summed as evens + odds."""
    from amaranth import Module, Signal

    from shiftpu.hw.arith import PRODUCT_LATENCY, pipelined_product

    m = Module()
    a, b = Signal(a_bits), Signal(b_bits)
    product = pipelined_product(m, a, b, "p")
    rng = np.random.default_rng(a_bits * 100 + b_bits)
    top_a, top_b = (1 << a_bits) - 1, (1 << b_bits) - 1
    pairs = [(top_a, top_b), (1, 1 << (b_bits - 1)), (1 << (a_bits - 1), 1), (0, 12345 & top_b)]
    pairs += [(int(x), int(y)) for x, y in zip(rng.integers(0, 1 << a_bits, 60, dtype=np.uint64),
                                                rng.integers(0, 1 << b_bits, 60, dtype=np.uint64), strict=True)]
    got = []

    async def bench(ctx):
        for t in range(len(pairs) + PRODUCT_LATENCY):
            if t < len(pairs):
                ctx.set(a, pairs[t][0])
                ctx.set(b, pairs[t][1])
            if t >= PRODUCT_LATENCY:
                got.append(ctx.get(product))
            await ctx.tick()

    sim = Simulator(m)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()
    assert got == [x * y for x, y in pairs]


def test_pipelined_product_refuses_what_needs_an_adder_tree():
    from amaranth import Module, Signal

    from shiftpu.hw.arith import pipelined_product

    with pytest.raises(ValueError, match="adder tree"):
        pipelined_product(Module(), Signal(20), Signal(40), "p")
    with pytest.raises(ValueError, match="A port"):
        pipelined_product(Module(), Signal(30), Signal(30), "p")


def test_small_product_is_the_product_for_every_kernel_size():
    from amaranth import Module, Signal

    from shiftpu.hw.arith import small_product

    m = Module()
    v, f, out = Signal(20), Signal(3), Signal(23)
    m.d.comb += out.eq(small_product(v, f))
    values = [0, 1, 0xFFFFF, 0x5A5A5, 777]
    got = []

    async def bench(ctx):
        for x in values:
            for k in range(8):
                ctx.set(v, x)
                ctx.set(f, k)
                got.append(ctx.get(out))

    sim = Simulator(m)
    sim.add_testbench(bench)
    sim.run()
    assert got == [x * k for x in values for k in range(8)]
