"""cocotb bench of CTRL.SOFT_RESET on the simulation top: runs cut off while AXI4 bursts are in flight.

The job (JSON named by ``SHIFTPU_RTL_JOB``) gives one program's images and a list of scenarios. Each scenario
starts the program (or not: ``idle``), waits for its trigger, writes CTRL.SOFT_RESET, counts the cycles until
STATUS.BUSY clears, then restores the arena, runs the program to the end and saves the arena. A monitor follows
the AXI4 master every cycle: what was in flight when the reset was written and what was left when BUSY cleared.
cocotbext-axi's AxiRam serves the master with random backpressure (seeded) on every channel, so that write beats
wait on W and read bursts stay open when the reset comes; the ``w_waiting`` scenarios hold WREADY low from ``after``
cycles into the run until the reset has been written, and write it once a W beat waits, so that it still waits then.
"""

from __future__ import annotations

import json
import os
import random
from pathlib import Path

import cocotb
from cocotb.clock import Clock
from cocotb.triggers import ClockCycles, First, RisingEdge, Timer
from cocotb.utils import get_sim_time
from cocotbext.axi import AxiBus, AxiLiteBus, AxiLiteMaster, AxiRam

from shiftpu.arch.regmap import OFFSET, Ctrl, Irq, Status

CLOCK_NS = 10
#: Cycles a scenario's trigger may take to come before the bench gives up on it.
TRIGGER_LIMIT = 200_000
#: Cycles the drain may take before the bench calls the accelerator stuck.
DRAIN_LIMIT = 5_000


class MasterMonitor:
    """Bursts of the AXI4 master in flight, followed every cycle; a snapshot when CTRL.SOFT_RESET is written."""

    def __init__(self, dut):
        self.dut = dut
        self.reads = 0  # AR taken, RLAST not yet
        self.writes = 0  # AW taken, B not yet
        self.w_owed = 0  # W beats owed to the AW bursts taken
        self.w_waiting = False  # a W beat offered and not taken in the cycle that ended at the last edge
        self.at_reset: dict | None = None

    def state(self) -> dict:
        return {"reads": self.reads, "writes": self.writes, "w_owed": self.w_owed, "w_waiting": self.w_waiting}

    async def run(self):
        d = self.dut
        while True:
            await RisingEdge(d.clk)
            if int(d.m_axi_arvalid.value) and int(d.m_axi_arready.value):
                self.reads += 1
            if int(d.m_axi_rvalid.value) and int(d.m_axi_rready.value) and int(d.m_axi_rlast.value):
                self.reads -= 1
            if int(d.m_axi_awvalid.value) and int(d.m_axi_awready.value):
                self.writes += 1
                self.w_owed += int(d.m_axi_awlen.value) + 1
            wvalid, wready = int(d.m_axi_wvalid.value), int(d.m_axi_wready.value)
            if wvalid and wready:
                self.w_owed -= 1
            if int(d.m_axi_bvalid.value) and int(d.m_axi_bready.value):
                self.writes -= 1
            self.w_waiting = bool(wvalid and not wready)
            if (int(d.s_axi_awvalid.value) and int(d.s_axi_awready.value) and int(d.s_axi_awaddr.value) == OFFSET["CTRL"]
                    and int(d.s_axi_wdata.value) >> Ctrl.SOFT_RESET & 1):
                self.at_reset = {**self.state(), "run_finished": bool(int(d.irq.value))}


class Backpressure:
    """Pause generators of the RAM's channels: random (seeded), and the W channel stalled on demand."""

    def __init__(self, rng: random.Random, busy: float):
        self.rng = rng
        self.busy = busy
        self.stall_w = False

    def pauses(self, w: bool = False):
        while True:
            yield (w and self.stall_w) or self.rng.random() < self.busy


async def _wait_for(dut, monitor: MasterMonitor, backpressure: Backpressure, trigger: dict) -> bool:
    """Wait for the scenario's trigger; False if it never came."""
    kind = trigger["kind"]
    if kind == "cycles":
        await ClockCycles(dut.clk, trigger["cycles"])
        return True
    if kind == "w_waiting":
        await ClockCycles(dut.clk, trigger["after"])
        backpressure.stall_w = True
    for _ in range(TRIGGER_LIMIT):
        await RisingEdge(dut.clk)
        s = monitor.state()
        if kind == "w_waiting" and s["w_waiting"]:
            return True
        if kind == "reads" and s["reads"] >= trigger.get("at_least", 1):
            return True
        if kind == "w_owed" and s["w_owed"] >= trigger.get("at_least", 1):
            return True
    return False


async def _run_to_end(dut, regs, max_cycles: int) -> bool:
    await regs.write_dword(OFFSET["CTRL"], 1 << Ctrl.START)
    step = Timer(max_cycles * CLOCK_NS, unit="ns")
    return await First(RisingEdge(dut.irq), step) is not step


@cocotb.test()
async def soft_reset_scenarios(dut):
    """Every scenario of the job: reset, drain, then a complete run."""
    job = json.loads(Path(os.environ["SHIFTPU_RTL_JOB"]).read_text())
    rng = random.Random(job["seed"])
    Clock(dut.clk, CLOCK_NS, unit="ns").start()
    dut.use_sim_ram.value = 0
    dut.mem_dump.value = 0
    ram = AxiRam(AxiBus.from_prefix(dut, "m_axi"), dut.clk, dut.rst, size=job["mem_size"])
    backpressure = Backpressure(rng, job["backpressure"])
    for channel in (ram.write_if.aw_channel, ram.write_if.b_channel, ram.read_if.ar_channel, ram.read_if.r_channel):
        channel.set_pause_generator(backpressure.pauses())
    ram.write_if.w_channel.set_pause_generator(backpressure.pauses(w=True))
    const, act = Path(job["const"]).read_bytes(), Path(job["act"]).read_bytes()
    ram.write(job["const_base"], const)
    regs = AxiLiteMaster(AxiLiteBus.from_prefix(dut, "s_axi"), dut.clk, dut.rst)
    dut.rst.value = 1
    await ClockCycles(dut.clk, 4)
    dut.rst.value = 0
    await ClockCycles(dut.clk, 2)
    monitor = MasterMonitor(dut)
    cocotb.start_soon(monitor.run())
    await regs.write_dword(OFFSET["CONST_BASE"], job["const_base"])
    await regs.write_dword(OFFSET["ACT_BASE"], job["act_base"])
    await regs.write_dword(OFFSET["IRQ_ENABLE"], 1 << Irq.DONE)
    results = []
    for n, scenario in enumerate(job["scenarios"]):
        ram.write(job["act_base"], act)
        monitor.at_reset = None
        record: dict = {"scenario": scenario}
        if scenario["kind"] != "idle":
            await regs.write_dword(OFFSET["CTRL"], 1 << Ctrl.START)
            record["triggered"] = await _wait_for(dut, monitor, backpressure, scenario)
        t0 = get_sim_time(unit="ns")
        await regs.write_dword(OFFSET["CTRL"], 1 << Ctrl.SOFT_RESET)
        backpressure.stall_w = False
        while True:  # STATUS polled as a driver does, a register read every few cycles
            status = int(await regs.read_dword(OFFSET["STATUS"]))
            cycles = round((get_sim_time(unit="ns") - t0) / CLOCK_NS)
            if not status >> Status.BUSY & 1 or cycles > DRAIN_LIMIT:
                break
        record["status_after"] = status
        record["cycles_to_idle"] = cycles
        record["in_flight_at_reset"] = monitor.at_reset
        record["in_flight_when_idle"] = monitor.state()
        record["pc_after"] = int(await regs.read_dword(OFFSET["PC"]))
        record["error_code_after"] = int(await regs.read_dword(OFFSET["ERROR_CODE"]))
        await regs.write_dword(OFFSET["IRQ_STATUS"], 1 << Irq.DONE)
        ram.write(job["act_base"], act)
        record["finished"] = await _run_to_end(dut, regs, job["max_cycles"])
        record["status_final"] = int(await regs.read_dword(OFFSET["STATUS"]))
        record["instructions"] = int(await regs.read_dword(OFFSET["INSTR_RETIRED"]))
        record["cycles"] = int(await regs.read_dword(OFFSET["CYCLES_LO"]))
        await regs.write_dword(OFFSET["IRQ_STATUS"], 1 << Irq.DONE)
        record["protocol_errors"] = int(dut.axi_protocol_errors.value)
        out = Path(job["out_dir"]) / f"act_{n}.bin"
        out.write_bytes(ram.read(job["act_base"], len(act)))
        record["arena"] = str(out)
        results.append(record)
    Path(job["result"]).write_text(json.dumps(results, indent=1))
