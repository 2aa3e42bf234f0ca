"""cocotb testbench that runs one program on the accelerator, as the runtime does on a board.

The job (a JSON file named by ``SHIFTPU_RTL_JOB``) gives the constant segment and activation arena
images. They are placed at two aligned addresses in an AXI4 RAM model: cocotbext-axi's ``AxiRam``, or
the RAM compiled into the simulation top (shiftpu.sim.rtl.harness). The test programs CONST_BASE and
ACT_BASE over AXI4-Lite, enables the interrupt, writes CTRL.START, waits for ``irq`` (Python sleeps
meanwhile: the clock runs in the simulator; only AxiRam's bus models run Python while bursts are in
flight), reads the registers and writes the arena back, with the count of AXI4 protocol violations seen
by the checker in the simulation top (shiftpu.sim.rtl.protocol).
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import cocotb
from cocotb.clock import Clock
from cocotb.triggers import ClockCycles, First, RisingEdge, Timer
from cocotbext.axi import AxiBus, AxiLiteBus, AxiLiteMaster, AxiRam

from shiftpu.arch.regmap import OFFSET, Irq, Status

CLOCK_NS = 10
#: With a wall-clock limit, how many cycles the simulation runs between two looks at the clock on the wall
#: (a fraction of a second at the simulation's speed).
WALL_CHECK_CYCLES = 20_000


async def _wait_done(dut, max_cycles: int, wall_timeout_s: float | None, t0: float) -> tuple[bool, bool]:
    """Wait for ``irq``: (timed out in cycles, timed out on the wall clock)."""
    chunk = max_cycles if wall_timeout_s is None else min(max_cycles, WALL_CHECK_CYCLES)
    waited = 0
    while True:
        cycles = min(chunk, max_cycles - waited)
        step = Timer(cycles * CLOCK_NS, unit="ns")
        if await First(RisingEdge(dut.irq), step) is not step:
            return False, False
        waited += cycles
        if waited >= max_cycles:
            return True, False
        if wall_timeout_s is not None and time.perf_counter() - t0 > wall_timeout_s:
            return False, True


async def _run_job(dut, job: dict) -> dict:
    const_base, act_base = job["const_base"], job["act_base"]
    Clock(dut.clk, CLOCK_NS, unit="ns").start()
    compiled_ram = job["memory"] == "compiled"
    dut.use_sim_ram.value = int(compiled_ram)
    dut.mem_dump.value = 0
    if not compiled_ram:
        ram = AxiRam(AxiBus.from_prefix(dut, "m_axi"), dut.clk, dut.rst, size=job["mem_size"])
        ram.write(const_base, Path(job["const"]).read_bytes())
        ram.write(act_base, Path(job["act"]).read_bytes())
    regs = AxiLiteMaster(AxiLiteBus.from_prefix(dut, "s_axi"), dut.clk, dut.rst)
    dut.rst.value = 1
    await ClockCycles(dut.clk, 4)
    dut.rst.value = 0
    await ClockCycles(dut.clk, 2)
    await regs.write_dword(OFFSET["CONST_BASE"], const_base)
    await regs.write_dword(OFFSET["ACT_BASE"], act_base)
    await regs.write_dword(OFFSET["IRQ_ENABLE"], 1 << Irq.DONE)
    t0 = time.perf_counter()
    await regs.write_dword(OFFSET["CTRL"], 1)
    timeout, wall_timeout = await _wait_done(dut, job["max_cycles"], job.get("wall_timeout_s"), t0)
    wall = time.perf_counter() - t0
    result = {"timeout": timeout, "wall_timeout": wall_timeout, "wall_seconds": wall}
    for name in ("STATUS", "ERROR_CODE", "PC", "INSTR_RETIRED", "CYCLES_LO", "CYCLES_HI", "STALL_LO", "STALL_HI",
                 "RD_BEATS", "WR_BEATS", "IRQ_STATUS", "CONFIG_HASH", "ISA_VERSION", "IP_ID"):
        result[name] = await regs.read_dword(OFFSET[name])
    await regs.write_dword(OFFSET["IRQ_STATUS"], 1 << Irq.DONE)
    await ClockCycles(dut.clk, 2)
    result["irq_after_ack"] = int(dut.irq.value)
    result["busy"] = bool(result["STATUS"] >> Status.BUSY & 1)
    result["axi_protocol_errors"] = int(dut.axi_protocol_errors.value)
    if compiled_ram:
        dut.mem_dump.value = 1  # the RAM writes the arena to the file named by its plusargs
        await ClockCycles(dut.clk, 1)
    else:
        Path(job["act_out"]).write_bytes(ram.read(act_base, job["act_bytes"]))
    return result


@cocotb.test()
async def run_program(dut):
    """Run the job's program and record registers, cycles and the final arena."""
    job = json.loads(Path(os.environ["SHIFTPU_RTL_JOB"]).read_text())
    result = await _run_job(dut, job)
    Path(job["result"]).write_text(json.dumps(result))
