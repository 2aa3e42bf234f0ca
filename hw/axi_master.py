"""AXI4 master burst engines: a reader (AR/R) and a writer (AW/W/B) for the Zynq HP port.

Each engine takes one command (beat-aligned address, number of beats) and splits it into INCR bursts
of at most ``max_burst_beats`` that never cross a 4 KiB boundary. Addresses are issued as fast as
the slave accepts them (several bursts may be outstanding); data moves through valid/ready streams.
A SLVERR/DECERR response sets a sticky error flag, cleared by ``clear``.
"""

from __future__ import annotations

from amaranth import Module, Mux, Signal, unsigned
from amaranth.lib import data, fifo, stream, wiring
from amaranth.lib.wiring import In, Out

from shiftpu.hw.params import BEATS_BITS, HwParams

#: AXI4 burst type INCR.
BURST_INCR = 0b01
#: AXI4 boundary no burst may cross, bytes.
BOUNDARY_4K = 4096
#: Write commands the writer holds for its data side (the one being sent included).
WRITE_QUEUE_DEPTH = 2


def transfer_layout(p: HwParams) -> data.StructLayout:
    """A transfer command: byte address (beat aligned) and number of beats."""
    return data.StructLayout({"addr": unsigned(p.addr_bits), "beats": unsigned(BEATS_BITS)})


def write_beat_layout(p: HwParams) -> data.StructLayout:
    return data.StructLayout({"data": unsigned(p.beat_bits), "strb": unsigned(p.beat_bytes)})


def burst_beats(p: HwParams, addr, remaining):
    """Beats of the next burst: min(remaining, max_burst_beats, beats to the next 4 KiB boundary)."""
    shift = (p.beat_bytes - 1).bit_length()
    to_boundary = (BOUNDARY_4K - addr[:12]) >> shift
    lim = Mux(to_boundary < p.cfg.max_burst_beats, to_boundary, p.cfg.max_burst_beats)
    return Mux(remaining < lim, remaining, lim)[:9]


def _size_code(p: HwParams) -> int:
    return (p.beat_bytes - 1).bit_length()


def read_port_members(p: HwParams) -> dict[str, wiring.Member]:
    """AR and R channel members, named as in AXI4 (without the interface prefix)."""
    return {
        "arid": Out(1), "araddr": Out(p.addr_bits), "arlen": Out(8), "arsize": Out(3), "arburst": Out(2),
        "arlock": Out(1), "arcache": Out(4), "arprot": Out(3), "arvalid": Out(1), "arready": In(1),
        "rid": In(1), "rdata": In(p.beat_bits), "rresp": In(2), "rlast": In(1), "rvalid": In(1), "rready": Out(1),
    }


def write_port_members(p: HwParams) -> dict[str, wiring.Member]:
    """AW, W and B channel members, named as in AXI4 (without the interface prefix)."""
    return {
        "awid": Out(1), "awaddr": Out(p.addr_bits), "awlen": Out(8), "awsize": Out(3), "awburst": Out(2),
        "awlock": Out(1), "awcache": Out(4), "awprot": Out(3), "awvalid": Out(1), "awready": In(1),
        "wdata": Out(p.beat_bits), "wstrb": Out(p.beat_bytes), "wlast": Out(1), "wvalid": Out(1), "wready": In(1),
        "bid": In(1), "bresp": In(2), "bvalid": In(1), "bready": Out(1),
    }


class BurstReader(wiring.Component):
    """Reads ``beats`` beats from ``addr`` as AXI4 INCR bursts and streams them out in order.

    A new command is taken as soon as every address of the previous one is issued, while its data may still
    be on the way: a client can queue the reads of several rows and hide the memory's latency behind the
    data of the earlier ones (AXI4 returns the bursts of one ID in order). ``idle``: no address left to issue
    and no beat outstanding.
    """

    def __init__(self, p: HwParams):
        self.p = p
        super().__init__({
            "cmd": In(stream.Signature(transfer_layout(p))),
            "data": Out(stream.Signature(unsigned(p.beat_bits))),
            "idle": Out(1),
            "error": Out(1),
            "clear": In(1),
            **read_port_members(p),
        })

    def elaborate(self, platform):
        p = self.p
        m = Module()
        ar_addr = Signal(p.addr_bits)
        ar_left = Signal(BEATS_BITS)
        r_left = Signal(BEATS_BITS)
        r_any = Signal()  # r_left != 0, registered with it (so the data handshake is one gate deep)
        blen = burst_beats(p, ar_addr, ar_left)

        cmd_fire = self.cmd.valid & self.cmd.ready
        r_fire = self.rvalid & self.rready
        m.d.comb += [
            self.idle.eq((ar_left == 0) & ~r_any),
            self.cmd.ready.eq(ar_left == 0),
            self.araddr.eq(ar_addr), self.arlen.eq(blen - 1), self.arsize.eq(_size_code(p)),
            self.arburst.eq(BURST_INCR), self.arcache.eq(0b0011), self.arvalid.eq(ar_left != 0),
            self.data.valid.eq(self.rvalid & r_any),
            self.data.payload.eq(self.rdata),
            self.rready.eq(self.data.ready & r_any),
        ]
        with m.If(cmd_fire):
            m.d.sync += [ar_addr.eq(self.cmd.payload.addr), ar_left.eq(self.cmd.payload.beats)]
        with m.If(self.arvalid & self.arready):
            m.d.sync += [ar_addr.eq(ar_addr + (blen << _size_code(p))), ar_left.eq(ar_left - blen)]
        # beats still to come, of every command taken
        r_left_next = Signal(BEATS_BITS)
        m.d.comb += r_left_next.eq(r_left + Mux(cmd_fire, self.cmd.payload.beats, 0) - r_fire)
        m.d.sync += [r_left.eq(r_left_next), r_any.eq(r_left_next != 0)]
        error = Signal()
        with m.If(self.clear):
            m.d.sync += error.eq(0)
        with m.Elif(r_fire & (self.rresp != 0)):
            m.d.sync += error.eq(1)
        m.d.comb += self.error.eq(error)
        return m


class BurstWriter(wiring.Component):
    """Writes ``beats`` beats (data with byte strobes) from a stream to ``addr`` as AXI4 INCR bursts.

    The address side takes a command once every address of the previous one is issued; the command also
    enters a queue of WRITE_QUEUE_DEPTH for the data side, which starts on it when the earlier commands' data is
    sent (one cycle after the queue hands it over). A client whose data trails its command through a pipeline
    can thus queue its next command early. ``idle`` also waits for every write response, so that a later read
    sees the data.
    """

    def __init__(self, p: HwParams):
        self.p = p
        super().__init__({
            "cmd": In(stream.Signature(transfer_layout(p))),
            "data": In(stream.Signature(write_beat_layout(p))),
            "idle": Out(1),
            "error": Out(1),
            "clear": In(1),
            **write_port_members(p),
        })

    def elaborate(self, platform):
        p = self.p
        m = Module()
        aw_addr = Signal(p.addr_bits)
        aw_left = Signal(BEATS_BITS)
        w_addr = Signal(p.addr_bits)
        w_left = Signal(BEATS_BITS)
        w_in_burst = Signal(9)  # beats left in the current W burst after this one (0: at a burst start)
        outstanding = Signal(16)
        aw_len = burst_beats(p, aw_addr, aw_left)
        w_len = burst_beats(p, w_addr, w_left)
        cur_left = Mux(w_in_burst != 0, w_in_burst, w_len)
        m.submodules.queue = queue = fifo.SyncFIFO(width=len(self.cmd.payload.as_value()), depth=WRITE_QUEUE_DEPTH)
        queued = data.View(transfer_layout(p), queue.r_data)

        aw_fire = self.awvalid & self.awready
        w_fire = self.wvalid & self.wready
        b_fire = self.bvalid & self.bready
        cmd_fire = self.cmd.valid & self.cmd.ready
        m.d.comb += [
            self.cmd.ready.eq((aw_left == 0) & queue.w_rdy),
            queue.w_en.eq(cmd_fire), queue.w_data.eq(self.cmd.payload),
            queue.r_en.eq(w_left == 0),
            self.idle.eq((aw_left == 0) & ~queue.r_rdy & (w_left == 0) & (outstanding == 0)),
            self.awaddr.eq(aw_addr), self.awlen.eq(aw_len - 1), self.awsize.eq(_size_code(p)),
            self.awburst.eq(BURST_INCR), self.awcache.eq(0b0011), self.awvalid.eq(aw_left != 0),
            self.wdata.eq(self.data.payload.data), self.wstrb.eq(self.data.payload.strb),
            self.wlast.eq(cur_left == 1),
            self.wvalid.eq(self.data.valid & (w_left != 0)),
            self.data.ready.eq(self.wready & (w_left != 0)),
            self.bready.eq(1),
        ]
        with m.If(cmd_fire):
            m.d.sync += [aw_addr.eq(self.cmd.payload.addr), aw_left.eq(self.cmd.payload.beats)]
        with m.If(aw_fire):
            m.d.sync += [aw_addr.eq(aw_addr + (aw_len << _size_code(p))), aw_left.eq(aw_left - aw_len)]
        with m.If((w_left == 0) & queue.r_rdy):
            m.d.sync += [w_addr.eq(queued.addr), w_left.eq(queued.beats)]
        with m.If(w_fire):
            m.d.sync += w_left.eq(w_left - 1)
            with m.If(w_in_burst == 0):
                m.d.sync += [w_addr.eq(w_addr + (w_len << _size_code(p))), w_in_burst.eq(w_len - 1)]
            with m.Else():
                m.d.sync += w_in_burst.eq(w_in_burst - 1)
        m.d.sync += outstanding.eq(outstanding + aw_fire - b_fire)
        error = Signal()
        with m.If(self.clear):
            m.d.sync += error.eq(0)
        with m.Elif(b_fire & (self.bresp != 0)):
            m.d.sync += error.eq(1)
        m.d.comb += self.error.eq(error)
        return m
