"""AXI4 master burst engines: a reader (AR/R) and a writer (AW/W/B) for the Zynq HP port.

Each engine takes one command (beat-aligned address, number of beats, at least 1) and splits it into INCR
bursts of at most ``max_burst_beats`` that never cross a 4 KiB boundary (:class:`BurstSplitter`). Each burst's
length is computed into a register before it is offered, so the first address goes out three cycles after the
command is taken (it waits in a command register first) and a command's later bursts every other cycle; several bursts may be outstanding, and data
moves through valid/ready streams. A SLVERR/DECERR response sets a sticky error flag, cleared by ``clear``.

``drain`` (the soft reset, :mod:`shiftpu.hw.soft_reset`) ends what is in flight within the AXI4 rules: no new burst
is addressed (an address already offered stays offered until it is taken), the reader accepts and drops the beats
of the bursts already addressed, and the writer completes its addressed bursts with WSTRB 0 and takes every
response. ``idle`` then says nothing is outstanding.
"""

from __future__ import annotations

from amaranth import Module, Mux, Signal, unsigned
from amaranth.lib import data, fifo, stream, wiring
from amaranth.lib.wiring import In, Out

from shiftpu.arch.latency import READ_ADDRESS_LATENCY
from shiftpu.hw.params import BEATS_BITS, HwParams, log2

#: AXI4 burst type INCR.
BURST_INCR = 0b01
#: AXI4 boundary no burst may cross, bytes.
BOUNDARY_4K = 4096
#: Bursts the writer's address side may run ahead of its data side.
WRITE_BURST_QUEUE = 4


def transfer_layout(p: HwParams) -> data.StructLayout:
    """A transfer command: byte address (beat aligned) and number of beats."""
    return data.StructLayout({"addr": unsigned(p.addr_bits), "beats": unsigned(BEATS_BITS)})


def write_beat_layout(p: HwParams) -> data.StructLayout:
    return data.StructLayout({"data": unsigned(p.beat_bits), "strb": unsigned(p.beat_bytes)})


def burst_layout(p: HwParams) -> data.StructLayout:
    """One burst: byte address and beats (1 .. max_burst_beats)."""
    return data.StructLayout({"addr": unsigned(p.addr_bits), "beats": unsigned(9)})


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


class BurstSplitter(wiring.Component):
    """Splits transfer commands into INCR bursts: min(beats left, max_burst_beats, beats to the next 4 KiB
    boundary) each.

    A command first lands in a register of its own (``ready`` is that register being empty, so neither
    ``valid`` nor the payload drives more than one register's inputs), and is taken from there when the
    previous one's last burst has gone. The next burst's length and whether it is the command's last are
    computed into registers in the cycle after the address or the beats left change, and the burst is offered
    the cycle after that (READ_ADDRESS_LATENCY after the command for the first burst).

    ``abort`` (a level) drops the command register and the rest of the command being split; a burst already
    offered stays offered until it is taken (AXI4 lets no VALID fall before its READY), and commands arriving
    meanwhile are taken and dropped.
    """

    def __init__(self, p: HwParams):
        self.p = p
        super().__init__({
            "cmd": In(stream.Signature(transfer_layout(p))),
            "burst": Out(stream.Signature(burst_layout(p))),
            "busy": Out(1),
            "abort": In(1),
        })

    def elaborate(self, platform):
        p = self.p
        m = Module()
        addr = Signal(p.addr_bits)
        left = Signal(BEATS_BITS)
        busy = Signal()  # a command is being split
        settled = Signal()  # beats and last hold the next burst's values
        beats = Signal(9)
        last = Signal()
        shift = _size_code(p)
        limit = Signal(9)  # the burst limit at addr, kept in a register beside it
        mb = log2(p.cfg.max_burst_beats)
        # left <= limit (limit <= max_burst_beats): the high bits of left clear, and a (mb + 1)-bit comparison
        fits = (left[mb + 1:] == 0) & (left[:mb + 1] <= limit)
        held = Signal()  # the command register holds a command not yet taken
        held_cmd = Signal(transfer_layout(p))
        with m.If(~held):
            m.d.sync += [held_cmd.eq(self.cmd.payload), held.eq(self.cmd.valid)]
        m.d.comb += [
            self.cmd.ready.eq(~held), self.busy.eq(busy | held),
            self.burst.valid.eq(busy & settled), self.burst.payload.addr.eq(addr), self.burst.payload.beats.eq(beats),
        ]
        with m.If(held & ~busy):
            m.d.sync += [addr.eq(held_cmd.addr), left.eq(held_cmd.beats), busy.eq(1), settled.eq(0), held.eq(0),
                         limit.eq(_burst_limit(held_cmd.addr, shift, p.cfg.max_burst_beats))]
        with m.Elif(busy & ~settled):
            m.d.sync += [beats.eq(Mux(fits, left, limit)), last.eq(fits), settled.eq(1)]
        with m.Elif(self.burst.valid & self.burst.ready):
            m.d.sync += [addr.eq(addr + (beats << shift)), left.eq(left - beats), settled.eq(0),
                         limit.eq(_limit_after(addr, limit, shift, p.cfg.max_burst_beats))]
            with m.If(last):
                m.d.sync += busy.eq(0)
        offered = self.burst.valid & ~self.burst.ready  # must stay offered
        with m.If(self.abort):
            m.d.sync += held.eq(0)
            with m.If(~offered):
                m.d.sync += busy.eq(0)
        assert READ_ADDRESS_LATENCY == 3, "hold, take, settle: the latency the cycle model counts"
        return m


def _burst_limit(addr, shift: int, max_burst: int):
    """Beats of the next burst at most: min(max_burst, beats to the next 4 KiB boundary), without a wide
    subtraction: with ``max_burst`` a power of two, the boundary is nearer only when the beat index's high bits
    are all set."""
    index_bits = log2(BOUNDARY_4K) - shift  # beat index within the 4 KiB page
    index = addr[shift:log2(BOUNDARY_4K)]
    mb = log2(max_burst)
    if mb >= index_bits:  # every burst may run to the boundary
        return (1 << index_bits) - index
    low = index[:mb]
    near = index[mb:].all() & (low != 0)
    return Mux(near, max_burst - low, max_burst)


def _limit_after(addr, limit, shift: int, max_burst: int):
    """The burst limit at the address after a burst of ``limit`` beats from ``addr`` (every burst but a
    command's last is that long), from registers and without the addition: a burst shorter than ``max_burst``
    ended at a 4 KiB boundary; a full one moved the beat index's high bits up by one."""
    index_bits = log2(BOUNDARY_4K) - shift
    mb = log2(max_burst)
    if mb >= index_bits:  # every burst ends at the boundary
        return 1 << index_bits
    index = addr[shift:log2(BOUNDARY_4K)]
    low = index[:mb]
    near_next = (index[mb:] == (1 << (index_bits - mb)) - 2) & (low != 0)
    return Mux(limit != max_burst, max_burst, Mux(near_next, max_burst - low, max_burst))


def _address_channel(m: Module, burst, prefix: str, port, ready_gate=1) -> None:
    """Drive an AR or AW channel from a burst stream."""
    p_valid = getattr(port, f"{prefix}valid")
    m.d.comb += [
        getattr(port, f"{prefix}addr").eq(burst.payload.addr), getattr(port, f"{prefix}len").eq(burst.payload.beats - 1),
        getattr(port, f"{prefix}size").eq(_size_code(port.p)), getattr(port, f"{prefix}burst").eq(BURST_INCR),
        getattr(port, f"{prefix}cache").eq(0b0011),
        p_valid.eq(burst.valid & ready_gate), burst.ready.eq(getattr(port, f"{prefix}ready") & ready_gate),
    ]


class BurstReader(wiring.Component):
    """Reads ``beats`` beats from ``addr`` as AXI4 INCR bursts and streams them out in order.

    A new command is taken into the splitter's command register while the previous one's addresses are
    issued, and its data may still be on the way: a client can queue the reads of several rows and hide the memory's latency behind the
    data of the earlier ones (AXI4 returns the bursts of one ID in order). The R channel is the data stream
    itself (R beats come only for the addresses issued). While ``drain`` is high, R beats are taken and dropped
    (the data stream offers none); ``idle`` (registered) says no command is pending and every addressed burst
    has delivered its RLAST beat.
    """

    def __init__(self, p: HwParams):
        self.p = p
        super().__init__({
            "cmd": In(stream.Signature(transfer_layout(p))),
            "data": Out(stream.Signature(unsigned(p.beat_bits))),
            "error": Out(1),
            "clear": In(1),
            "drain": In(1),
            "idle": Out(1),
            **read_port_members(p),
        })

    def elaborate(self, platform):
        m = Module()
        m.submodules.splitter = splitter = BurstSplitter(self.p)
        wiring.connect(m, wiring.flipped(self.cmd), splitter.cmd)
        _address_channel(m, splitter.burst, "ar", self)
        m.d.comb += [
            splitter.abort.eq(self.drain), self.data.payload.eq(self.rdata),
            self.data.valid.eq(self.rvalid & ~self.drain), self.rready.eq(self.data.ready | self.drain),
        ]
        ar_fire = self.arvalid & self.arready
        last_fire = self.rvalid & self.rready & self.rlast
        outstanding = Signal(16)  # bursts addressed whose RLAST beat has not come
        m.d.sync += outstanding.eq(outstanding + ar_fire - last_fire)
        idle = Signal()
        m.d.sync += idle.eq(~splitter.busy & (outstanding == 0))
        m.d.comb += self.idle.eq(idle)
        error = Signal()
        with m.If(self.clear):
            m.d.sync += error.eq(0)
        with m.Elif(self.rvalid & (self.rresp != 0)):  # sticky: whether the beat is taken this cycle or later
            m.d.sync += error.eq(1)
        m.d.comb += self.error.eq(error)
        return m


class BurstWriter(wiring.Component):
    """Writes ``beats`` beats (data with byte strobes) from a stream to ``addr`` as AXI4 INCR bursts.

    The address side holds one command while the previous one's addresses are issued; each burst's length
    enters a queue (WRITE_BURST_QUEUE deep) for the data side when its address is taken, so write data never
    runs ahead of its address, and a client whose data trails its command through a pipeline can queue its next
    command early. ``idle`` also waits for every write response, so that a later read sees the data; it is
    registered, so it rises a cycle after the last response and falls a cycle after a command is taken.

    While ``drain`` is high, the beats still owed to the bursts already addressed go out as filler beats (WDATA
    and WSTRB 0) instead of the data stream's, except that a data beat already offered on W and not yet taken
    (``holding``, registered) goes out first, unchanged: its producer must keep it until then.
    """

    def __init__(self, p: HwParams):
        self.p = p
        super().__init__({
            "cmd": In(stream.Signature(transfer_layout(p))),
            "data": In(stream.Signature(write_beat_layout(p))),
            "idle": Out(1),
            "error": Out(1),
            "clear": In(1),
            "drain": In(1),
            "holding": Out(1),
            **write_port_members(p),
        })

    def elaborate(self, platform):
        p = self.p
        m = Module()
        m.submodules.splitter = splitter = BurstSplitter(p)
        m.submodules.bursts = bursts = fifo.SyncFIFO(width=9, depth=WRITE_BURST_QUEUE)
        wiring.connect(m, wiring.flipped(self.cmd), splitter.cmd)
        _address_channel(m, splitter.burst, "aw", self, ready_gate=bursts.w_rdy)
        aw_fire = self.awvalid & self.awready
        m.d.comb += [splitter.abort.eq(self.drain), bursts.w_en.eq(aw_fire),
                     bursts.w_data.eq(splitter.burst.payload.beats)]

        # data side: one burst at a time, its length from the queue; WLAST from a register
        w_left = Signal(9)  # beats of the burst still to send
        w_active = Signal()
        w_last = Signal()  # w_left == 1
        w_fire = self.wvalid & self.wready
        take = ~w_active | (w_fire & w_last)
        holding = Signal()  # the data stream's beat is on W, not yet taken
        fill = Signal()  # draining with no data beat to finish: filler beats
        m.d.sync += holding.eq(self.data.valid & w_active & ~fill & ~self.wready)
        m.d.comb += [
            fill.eq(self.drain & ~holding), self.holding.eq(holding),
            self.wdata.eq(Mux(fill, 0, self.data.payload.data)), self.wstrb.eq(Mux(fill, 0, self.data.payload.strb)),
            self.wlast.eq(w_last), self.wvalid.eq((self.data.valid | fill) & w_active),
            self.data.ready.eq(self.wready & w_active & ~fill), bursts.r_en.eq(take), self.bready.eq(1),
        ]
        with m.If(take):
            m.d.sync += [w_active.eq(bursts.r_rdy), w_left.eq(bursts.r_data), w_last.eq(bursts.r_data == 1)]
        with m.Elif(w_fire):
            m.d.sync += [w_left.eq(w_left - 1), w_last.eq(w_left == 2)]

        b_fire = self.bvalid & self.bready
        outstanding = Signal(16)  # bursts whose response has not come
        m.d.sync += outstanding.eq(outstanding + aw_fire - b_fire)
        cmd_fire = self.cmd.valid & self.cmd.ready
        idle = Signal()
        m.d.sync += idle.eq(~splitter.busy & ~bursts.r_rdy & ~w_active & (outstanding == 0) & ~cmd_fire)
        m.d.comb += self.idle.eq(idle)
        error = Signal()
        with m.If(self.clear):
            m.d.sync += error.eq(0)
        with m.Elif(b_fire & (self.bresp != 0)):
            m.d.sync += error.eq(1)
        m.d.comb += self.error.eq(error)
        return m
