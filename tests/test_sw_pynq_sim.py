"""The board code path (PYNQ Overlay, DefaultIP/MMIO, allocate) on the simulated PYNQ device."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("pynq")

from test_sw_driver import ARENA, CFG, C, H, W, arena_with, halve_program, read_out  # noqa: E402

from shiftpu.boards import load_board  # noqa: E402
from shiftpu.sim.golden import GoldenAccelerator  # noqa: E402
from shiftpu.sw.device import SimDevice  # noqa: E402
from shiftpu.sw.device_pynq import OverlayError, PynqDevice  # noqa: E402
from shiftpu.sw.driver import AcceleratorTimeout, ConfigMismatchError, Driver, DriverAccelerator  # noqa: E402
from shiftpu.sw.pynq_sim import SimulatedPynqDevice, simulated_device, write_sim_overlay  # noqa: E402

BOARD = load_board("pynq-z2")


def open_sim(tmp_path, config=CFG, board=BOARD, timeout_s=5.0):
    bit = write_sim_overlay(tmp_path, board, config)
    device = PynqDevice(bit, pynq_device=simulated_device(), name="pynq-sim")
    return device, Driver(device, timeout_s=timeout_s)


def test_simulated_device_is_found_through_pynq_enumeration():
    import pynq

    assert any(isinstance(d, SimulatedPynqDevice) for d in pynq.Device.devices)
    assert simulated_device().capabilities == {"REGISTER_RW": True}


def test_overlay_binds_the_ip_driver_and_sets_the_fabric_clock(tmp_path):
    import pynq

    device, driver = open_sim(tmp_path)
    assert device.ip_name == "shiftpu_accel_0" and device.config == CFG
    assert type(device.ip).__name__ == "ShiftpuIP"
    assert int(device.ip.register_map.IP_ID.VALUE) == 0x55504853
    assert driver.identity.config_hash == CFG.config_hash()
    assert pynq.Clocks.fclk0_mhz == pytest.approx(CFG.clock_mhz, rel=0.05)


@pytest.mark.parametrize("board", ["pynq-z2", "ultra96v2"])
def test_pynq_sim_gives_the_same_bytes_as_the_plain_device(tmp_path, board):
    rng = np.random.default_rng(11)
    print("seed 11")
    x = rng.integers(-128, 128, size=(C, H, W)).astype(np.int8)
    device, driver = open_sim(tmp_path, board=load_board(board))
    assert device.ip.mmio.base_addr == (0x43C0_0000 if board == "pynq-z2" else 0xA000_0000)
    via_pynq = arena_with(x)
    DriverAccelerator(driver, CFG).run_program(halve_program(), via_pynq)
    plain = arena_with(x)
    DriverAccelerator(Driver(SimDevice(GoldenAccelerator(CFG))), CFG).run_program(halve_program(), plain)
    assert np.array_equal(via_pynq, plain)
    assert np.array_equal(read_out(via_pynq), np.round(x / 2).astype(np.int8))


def test_bitstream_for_another_config_is_refused(tmp_path):
    _, driver = open_sim(tmp_path, config=CFG.with_(pe_px=16, strip_width=32))
    with pytest.raises(ConfigMismatchError, match=f"0x{CFG.config_hash():08x}"):
        DriverAccelerator(driver, CFG)


def test_missing_hwh_and_bitstream_are_clear_errors(tmp_path):
    bit = write_sim_overlay(tmp_path, BOARD, CFG)
    bit.with_suffix(".hwh").unlink()
    with pytest.raises(OverlayError, match=r"shiftpu\.hwh is missing"):
        PynqDevice(bit, pynq_device=simulated_device())
    with pytest.raises(OverlayError, match="does not exist"):
        PynqDevice(tmp_path / "nothing.bit", pynq_device=simulated_device())


def test_hang_times_out_frees_pynq_buffers_and_recovers(tmp_path):
    device, driver = open_sim(tmp_path, timeout_s=2.0)
    accel = DriverAccelerator(driver, CFG)
    ddr = device.overlay.device.default_memory
    accel.run_program(halve_program(), np.zeros(ARENA, dtype=np.uint8))
    assert ddr.allocated_bytes > 0
    device.overlay.device.model.hang_next_run = True
    with pytest.raises(AcceleratorTimeout) as e:
        accel.run_program(halve_program(), np.zeros(ARENA, dtype=np.uint8))
    assert e.value.registers["STATUS"] == 1
    assert ddr.allocated_bytes == 0
    act = arena_with(np.full((C, H, W), -3, dtype=np.int8))
    accel.run_program(halve_program(), act)
    assert np.all(read_out(act) == -2)  # -1.5 rounds to even
