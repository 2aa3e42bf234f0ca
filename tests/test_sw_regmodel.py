"""The register model: access types of the register map, START sequencing, counters, errors."""

from __future__ import annotations

import threading

import numpy as np
from test_sw_driver import ARENA, CFG, halve_program

from shiftpu.arch.regmap import IP_MAGIC, OFFSET, ErrorCode
from shiftpu.sim.golden import GoldenAccelerator
from shiftpu.sim.regmodel import RegisterModel
from shiftpu.sw.device import HostMemory


def _model():
    done = threading.Event()
    mem = HostMemory()
    model = RegisterModel(GoldenAccelerator(CFG), mem, on_finish=done.set)
    return model, mem, done


def test_reset_state_and_read_only_registers():
    model, _, _ = _model()
    assert model.read(OFFSET["IP_ID"]) == IP_MAGIC
    assert model.read(OFFSET["CONFIG_HASH"]) == CFG.config_hash()
    model.write(OFFSET["IP_ID"], 0)
    model.write(OFFSET["STATUS"], 7)
    assert model.read(OFFSET["IP_ID"]) == IP_MAGIC and model.read(OFFSET["STATUS"]) == 0
    model.write(OFFSET["CONST_BASE"], 0x1_2345_6789)  # 32-bit register
    assert model.read(OFFSET["CONST_BASE"]) == 0x2345_6789
    assert model.read(0x9C) == 0  # undecoded


def test_run_sets_done_counters_and_w1c_irq():
    model, mem, done = _model()
    const, act = mem.allocate(4096), mem.allocate(ARENA)
    const.array[: halve_program().size] = halve_program()
    model.write(OFFSET["CONST_BASE"], const.physical_address)
    model.write(OFFSET["ACT_BASE"], act.physical_address)
    model.write(OFFSET["IRQ_ENABLE"], 1)
    model.write(OFFSET["CTRL"], 1)
    assert done.wait(10)
    assert model.read(OFFSET["STATUS"]) == 0b010  # DONE
    assert model.read(OFFSET["INSTR_RETIRED"]) == 2 and model.read(OFFSET["PC"]) == 1
    assert model.read(OFFSET["CYCLES_LO"]) == 0  # the golden model has no clock
    assert model.irq and model.read(OFFSET["IRQ_STATUS"]) == 1
    model.write(OFFSET["IRQ_STATUS"], 1)
    assert not model.irq and model.read(OFFSET["IRQ_STATUS"]) == 0


def test_start_while_busy_is_ignored_and_unmapped_address_is_axi_read():
    model, _, done = _model()
    model.hang_next_run = True
    model.write(OFFSET["CTRL"], 1)
    assert model.read(OFFSET["STATUS"]) == 1
    model.write(OFFSET["CTRL"], 1)  # ignored: still busy, no run started
    assert not done.wait(0.1) and model.read(OFFSET["STATUS"]) == 1
    model.reset()
    model.write(OFFSET["CONST_BASE"], 0x40)  # no buffer there
    model.write(OFFSET["CTRL"], 1)
    assert done.wait(10)
    assert model.read(OFFSET["STATUS"]) == 0b100
    assert model.read(OFFSET["ERROR_CODE"]) == ErrorCode.AXI_READ
    assert np.uint32(model.read(OFFSET["IRQ_STATUS"])) == 1
