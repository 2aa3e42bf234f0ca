"""The sequencer: program header check, instruction fetch and decode, dispatch to the engines, errors.

A run: fetch the 64-byte header at CONST_BASE, check magic, ISA version and config hash, then for
each instruction fetch its 64 bytes, check them (:func:`shiftpu.hw.decode.instruction_checks`), and run
it on the CONV engine or the POOL/ADD/MOVE engine; END finishes the run. Cost of each fetch (header
or instruction): 1 cycle for the command, the read latency, ``64 / beat bytes`` beats, 1 cycle to take
the word; then 1 cycle to latch, DECODE_CHECK for the registered checks, 1 to decode and dispatch, and 1 after
the engine finishes.
"""

from __future__ import annotations

from amaranth import Module, Mux, Signal, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from shiftpu.arch.isa import INSTR_BITS, INSTR_BYTES, ISA_VERSION, PROGRAM_MAGIC, Opcode
from shiftpu.arch.latency import DECODE_CHECK
from shiftpu.arch.regmap import ErrorCode
from shiftpu.hw.axi_master import transfer_layout, write_beat_layout
from shiftpu.hw.conv_engine import ConvEngine
from shiftpu.hw.decode import HEADER, INSTRUCTION, instruction_checks
from shiftpu.hw.eltwise import EltwiseEngine
from shiftpu.hw.gearbox import BeatsToWords
from shiftpu.hw.params import HwParams
from shiftpu.hw.wait import wait_cycles


class Sequencer(wiring.Component):
    """Runs a program: owns instruction fetch and the two execution engines."""

    def __init__(self, p: HwParams):
        self.p = p
        super().__init__({
            "start": In(1),
            "const_base": In(32),
            "act_base": In(32),
            "busy": Out(1),
            "finish": Out(1),
            "failed": Out(1),
            "error_code": Out(8),
            "pc": Out(32),
            "retire": Out(1),
            "stall": Out(1),
            "rd_cmd": Out(stream.Signature(transfer_layout(p))),
            "rd_data": In(stream.Signature(unsigned(p.beat_bits))),
            "rd_error": In(1),
            "wr_cmd": Out(stream.Signature(transfer_layout(p))),
            "wr_data": Out(stream.Signature(write_beat_layout(p))),
            "wr_idle": In(1),
            "wr_error": In(1),
            "clear_errors": Out(1),
        })

    def elaborate(self, platform):
        p = self.p
        m = Module()
        m.submodules.gear = gear = BeatsToWords(p.beat_bits, INSTR_BITS)
        m.submodules.conv = conv = ConvEngine(p)
        m.submodules.elt = elt = EltwiseEngine(p)
        word = Signal(INSTR_BITS)
        header = data.View(HEADER, word)
        instr = Signal(INSTRUCTION)
        # the next instruction's address and whether the program has run out of instructions, stepped at retire
        fetch_addr = Signal(32)
        n_left = Signal(32)  # instructions of the program not yet retired
        at_end = Signal()  # n_left == 0
        use_conv = Signal()
        code = Signal(8)
        illegal, bad = instruction_checks(m, instr, p)

        for e in (conv, elt):
            m.d.comb += [e.instr.eq(instr), e.const_base.eq(self.const_base), e.act_base.eq(self.act_base),
                         e.wr_idle.eq(self.wr_idle)]
        # the engines start from registered pulses, in RUN's first cycle (ENGINE_START after DECODE)
        start_conv, start_elt = Signal(), Signal()
        m.d.sync += [start_conv.eq(0), start_elt.eq(0)]
        m.d.comb += [conv.start.eq(start_conv), elt.start.eq(start_elt), gear.beats.payload.eq(self.rd_data.payload)]
        # the active engine owns the AXI engines while it runs: its outputs are selected; the AXI side's valid,
        # ready and data go to both engines (an engine that is not running takes and offers nothing)
        for src in (conv, elt):
            m.d.comb += [src.rd_cmd.ready.eq(self.rd_cmd.ready), src.rd_data.valid.eq(self.rd_data.valid),
                         src.rd_data.payload.eq(self.rd_data.payload), src.wr_cmd.ready.eq(self.wr_cmd.ready),
                         src.wr_data.ready.eq(self.wr_data.ready)]
            with m.If(use_conv == (src is conv)):
                m.d.comb += [
                    self.rd_cmd.valid.eq(src.rd_cmd.valid), self.rd_cmd.payload.eq(src.rd_cmd.payload),
                    self.rd_data.ready.eq(src.rd_data.ready),
                    self.wr_cmd.valid.eq(src.wr_cmd.valid), self.wr_cmd.payload.eq(src.wr_cmd.payload),
                    self.wr_data.valid.eq(src.wr_data.valid), self.wr_data.payload.eq(src.wr_data.payload),
                ]
        m.d.comb += [self.error_code.eq(code), self.stall.eq(Mux(use_conv, conv.stall, elt.stall))]

        def fetch(addr, next_state):
            m.d.comb += [self.rd_cmd.valid.eq(1), self.rd_cmd.payload.addr.eq(addr),
                         self.rd_cmd.payload.beats.eq(p.instr_beats)]
            with m.If(self.rd_cmd.ready):
                m.d.comb += gear.restart.eq(1)
                m.next = next_state

        def receive(next_state):
            m.d.comb += [self.rd_data.ready.eq(gear.beats.ready), gear.beats.valid.eq(self.rd_data.valid),
                         gear.words.ready.eq(1)]
            with m.If(gear.words.valid):
                m.d.sync += word.eq(gear.words.payload)
                m.next = next_state

        def fail(error: ErrorCode):
            m.d.sync += code.eq(error)
            m.next = "STOP"

        with m.FSM():
            with m.State("IDLE"):
                with m.If(self.start):
                    m.d.comb += self.clear_errors.eq(1)
                    m.d.sync += [self.pc.eq(0), code.eq(0), use_conv.eq(0)]
                    m.next = "HDR_CMD"
            with m.State("HDR_CMD"):
                m.d.comb += self.busy.eq(1)
                fetch(self.const_base, "HDR_DATA")
            with m.State("HDR_DATA"):
                m.d.comb += self.busy.eq(1)
                receive("HDR_CHECK")
            with m.State("HDR_CHECK"):
                m.d.comb += self.busy.eq(1)
                m.d.sync += [n_left.eq(header.n_instr), at_end.eq(header.n_instr == 0),
                             fetch_addr.eq(self.const_base + INSTR_BYTES)]
                with m.If(self.rd_error):
                    fail(ErrorCode.AXI_READ)
                with m.Elif(header.magic != PROGRAM_MAGIC):
                    fail(ErrorCode.BAD_MAGIC)
                with m.Elif(header.isa_version != ISA_VERSION):
                    fail(ErrorCode.ISA_VERSION)
                with m.Elif(header.config_hash != p.cfg.config_hash()):
                    fail(ErrorCode.CONFIG_HASH)
                with m.Else():
                    m.next = "FETCH_CMD"
            with m.State("FETCH_CMD"):
                m.d.comb += self.busy.eq(1)
                with m.If(at_end):
                    fail(ErrorCode.NO_END)
                with m.Else():
                    fetch(fetch_addr, "FETCH_DATA")
            with m.State("FETCH_DATA"):
                m.d.comb += self.busy.eq(1)
                receive("LATCH")
            with m.State("LATCH"):
                m.d.comb += self.busy.eq(1)
                m.d.sync += instr.eq(word)
                m.next = "CHECK"
            with m.State("CHECK"):  # the registered checks of the new instruction settle
                m.d.comb += self.busy.eq(1)
                with m.If(wait_cycles(m, DECODE_CHECK, "check")):
                    m.next = "DECODE"
            with m.State("DECODE"):
                m.d.comb += self.busy.eq(1)
                with m.If(self.rd_error):
                    fail(ErrorCode.AXI_READ)
                with m.Elif(illegal):
                    fail(ErrorCode.ILLEGAL_OPCODE)
                with m.Elif(bad):
                    fail(ErrorCode.BAD_FIELD)
                with m.Elif(instr.opcode == Opcode.END):
                    m.d.comb += self.retire.eq(1)
                    m.next = "STOP"
                with m.Elif(instr.opcode == Opcode.CONV):
                    m.d.sync += [start_conv.eq(1), use_conv.eq(1)]
                    m.next = "RUN"
                with m.Else():
                    m.d.sync += [start_elt.eq(1), use_conv.eq(0)]
                    m.next = "RUN"
            with m.State("RUN"):
                m.d.comb += self.busy.eq(1)
                engine_done = Mux(use_conv, conv.done, elt.done)
                with m.If(engine_done):
                    m.d.sync += use_conv.eq(0)
                    with m.If(use_conv & conv.failed):
                        fail(ErrorCode.BAD_FIELD)
                    with m.Elif(self.rd_error):
                        fail(ErrorCode.AXI_READ)
                    with m.Elif(self.wr_error):
                        fail(ErrorCode.AXI_WRITE)
                    with m.Else():
                        m.d.comb += self.retire.eq(1)
                        m.d.sync += [self.pc.eq(self.pc + 1), fetch_addr.eq(fetch_addr + INSTR_BYTES),
                                     n_left.eq(n_left - 1), at_end.eq(n_left == 1)]
                        m.next = "FETCH_CMD"
            with m.State("STOP"):
                m.d.comb += [self.busy.eq(1), self.finish.eq(1), self.failed.eq(code != 0)]
                m.next = "IDLE"
        return m
