"""cocotb bench for the AXI4 protocol checker: scripted good and bad master behaviour, counted errors."""

from __future__ import annotations

import cocotb
from cocotb.clock import Clock
from cocotb.triggers import ClockCycles, RisingEdge

SIGNALS = ("arvalid", "arready", "araddr", "arlen", "arsize", "arburst", "awvalid", "awready", "awaddr", "awlen",
           "awsize", "awburst", "wvalid", "wready", "wlast", "wdata", "wstrb")


async def _start(dut):
    Clock(dut.clk, 10, unit="ns").start()
    for s in SIGNALS:
        getattr(dut, f"mon_axi_{s}").value = 0
    dut.mon_axi_arsize.value = 3
    dut.mon_axi_awsize.value = 3
    dut.mon_axi_arburst.value = 1
    dut.mon_axi_awburst.value = 1
    dut.rst.value = 1
    await ClockCycles(dut.clk, 2)
    dut.rst.value = 0


async def _ar(dut, addr, length, wait=0, change_during_wait=False):
    dut.mon_axi_araddr.value = addr
    dut.mon_axi_arlen.value = length - 1
    dut.mon_axi_arvalid.value = 1
    for k in range(wait):
        await RisingEdge(dut.clk)
        if change_during_wait and k == 0:
            dut.mon_axi_araddr.value = addr + 8
    dut.mon_axi_arready.value = 1
    await RisingEdge(dut.clk)
    dut.mon_axi_arvalid.value = 0
    dut.mon_axi_arready.value = 0


async def _write(dut, addr, length, last_at):
    dut.mon_axi_awaddr.value = addr
    dut.mon_axi_awlen.value = length - 1
    dut.mon_axi_awvalid.value = 1
    dut.mon_axi_awready.value = 1
    await RisingEdge(dut.clk)
    dut.mon_axi_awvalid.value = 0
    dut.mon_axi_wvalid.value = 1
    dut.mon_axi_wready.value = 1
    for k in range(last_at):
        dut.mon_axi_wlast.value = int(k == last_at - 1)
        await RisingEdge(dut.clk)
    dut.mon_axi_wvalid.value = 0
    dut.mon_axi_wlast.value = 0


async def _errors(dut) -> int:
    await ClockCycles(dut.clk, 2)
    return int(dut.axi_protocol_errors.value)


@cocotb.test()
async def legal_traffic_counts_nothing(dut):
    await _start(dut)
    await _ar(dut, 0x1000, 16, wait=3)
    await _ar(dut, 0x1F80, 16)  # ends exactly at the 4 KiB boundary
    await _write(dut, 0x2000, 4, last_at=4)
    assert await _errors(dut) == 0


@cocotb.test()
async def burst_across_4k_is_counted(dut):
    await _start(dut)
    await _ar(dut, 0x1F88, 16)
    assert await _errors(dut) == 1


@cocotb.test()
async def address_change_while_waiting_is_counted(dut):
    await _start(dut)
    await _ar(dut, 0x100, 4, wait=2, change_during_wait=True)
    assert await _errors(dut) >= 1


@cocotb.test()
async def early_wlast_is_counted(dut):
    await _start(dut)
    await _write(dut, 0x3000, 4, last_at=3)
    assert await _errors(dut) == 1


@cocotb.test()
async def too_long_burst_is_counted(dut):
    await _start(dut)
    await _ar(dut, 0x0, 17)
    assert await _errors(dut) == 1
