"""The register-level driver on the plain simulated device: runs, errors, identity checks, the hang path."""

from __future__ import annotations

import numpy as np
import pytest

from shiftpu.arch import layout
from shiftpu.arch.config import AccelConfig
from shiftpu.arch.isa import Instruction, Opcode, encode_program
from shiftpu.arch.regmap import OFFSET, ErrorCode
from shiftpu.sim.accelerator import Accelerator, AcceleratorError
from shiftpu.sim.golden import GoldenAccelerator
from shiftpu.sw.device import SimDevice
from shiftpu.sw.driver import AcceleratorTimeout, ConfigMismatchError, Driver, DriverAccelerator

CFG = AccelConfig()
C, H, W = 3, 4, 5
OUT_ADDR = layout.align(layout.activation_bytes(C, H, W, CFG))
ARENA = OUT_ADDR + layout.align(layout.activation_bytes(C, H, W, CFG))


def halve_program(config: AccelConfig = CFG) -> np.ndarray:
    """One MOVE: out = round_half_even(in / 2), int8 -> int8."""
    move = Instruction(Opcode.MOVE, in_h=H, in_w=W, in_c=C, out_h=H, out_w=W, out_c=C, out_shift=1,
                       in_addr=0, out_addr=OUT_ADDR)
    return np.frombuffer(encode_program([move], config.config_hash()), dtype=np.uint8).copy()


def arena_with(x: np.ndarray) -> np.ndarray:
    act = np.zeros(ARENA, dtype=np.uint8)
    packed = layout.pack_activation(x, CFG)
    act[: packed.size] = packed
    return act


def read_out(act: np.ndarray) -> np.ndarray:
    return layout.unpack_activation(act[OUT_ADDR:], C, H, W, True, CFG)


def test_run_on_sim_device_matches_round_half_even():
    rng = np.random.default_rng(7)
    print("seed 7")
    x = rng.integers(-128, 128, size=(C, H, W)).astype(np.int8)
    accel = DriverAccelerator(Driver(SimDevice(GoldenAccelerator(CFG))), CFG)
    assert isinstance(accel, Accelerator)
    act = arena_with(x)
    stats = accel.run_program(halve_program(), act)
    assert stats.instructions == 2 and stats.backend == "sim" and stats.cycles is None
    assert np.array_equal(read_out(act), np.round(x.astype(np.float64) / 2).astype(np.int8))
    assert read_out(act)[0, 0, 0] == np.round(x[0, 0, 0] / 2)


def test_zero_copy_arena_gives_same_result():
    x = np.arange(C * H * W, dtype=np.int64).reshape(C, H, W).astype(np.int8) - 30
    accel = DriverAccelerator(Driver(SimDevice(GoldenAccelerator(CFG))), CFG)
    staged = arena_with(x)
    accel.run_program(halve_program(), staged)
    arena = accel.arena(ARENA)
    arena[:] = arena_with(x)
    accel.run_program(halve_program(), arena)
    assert np.array_equal(arena, staged)
    assert read_out(arena)[0, 0, 1] == -14  # -29 / 2 = -14.5 rounds to even


def test_alternating_staging_arenas_switch_act_base():
    device = SimDevice(GoldenAccelerator(CFG))
    accel = DriverAccelerator(Driver(device), CFG)
    bases = []
    for _ in range(4):
        accel.run_program(halve_program(), np.zeros(ARENA, dtype=np.uint8))
        bases.append(device.read_register(OFFSET["ACT_BASE"]))
    assert bases[0] == bases[2] and bases[1] == bases[3] and bases[0] != bases[1]


def test_config_mismatch_is_refused_naming_both_hashes():
    other = CFG.with_(pe_oc=16)
    driver = Driver(SimDevice(GoldenAccelerator(CFG)))
    with pytest.raises(ConfigMismatchError) as e:
        DriverAccelerator(driver, other)
    assert f"0x{other.config_hash():08x}" in str(e.value) and f"0x{CFG.config_hash():08x}" in str(e.value)
    accel = DriverAccelerator(driver, CFG)
    with pytest.raises(ConfigMismatchError):
        accel.run_program(halve_program(other), np.zeros(ARENA, dtype=np.uint8))


def test_error_code_is_mapped_with_pc():
    accel = DriverAccelerator(Driver(SimDevice(GoldenAccelerator(CFG))), CFG)
    with pytest.raises(AcceleratorError) as e:
        accel.run_program(halve_program(), np.zeros(OUT_ADDR, dtype=np.uint8))  # output beyond the arena
    assert e.value.code is ErrorCode.AXI_WRITE and e.value.pc == 0


def test_hung_accelerator_times_out_dumps_registers_frees_buffers_and_recovers():
    device = SimDevice(GoldenAccelerator(CFG))
    accel = DriverAccelerator(Driver(device, timeout_s=1.0), CFG)
    x = np.full((C, H, W), 9, dtype=np.int8)
    accel.run_program(halve_program(), arena_with(x))
    assert device.memory.allocated_bytes > 0
    device.model.hang_next_run = True
    with pytest.raises(AcceleratorTimeout) as e:
        accel.run_program(halve_program(), arena_with(x))
    assert e.value.registers["STATUS"] == 1  # BUSY
    assert "STATUS=0x1" in str(e.value)
    assert device.memory.allocated_bytes == 0
    act = arena_with(x)
    accel.run_program(halve_program(), act)
    assert np.all(read_out(act) == 4)  # 9 / 2 = 4.5 rounds to even


def test_wrong_ip_is_refused():
    class NotOurs(SimDevice):
        def read_register(self, offset: int) -> int:
            return 0 if offset == OFFSET["IP_ID"] else super().read_register(offset)

    with pytest.raises(Exception, match="not a shiftpu accelerator"):
        Driver(NotOurs(GoldenAccelerator(CFG)))


def test_backend_crash_surfaces_at_once_not_as_a_timeout():
    class Crashing(GoldenAccelerator):
        def run_program(self, const, act):
            raise RuntimeError("simulator exited with status 139")

    accel = DriverAccelerator(Driver(SimDevice(Crashing(CFG)), timeout_s=30.0), CFG)
    with pytest.raises(RuntimeError, match="status 139"):
        accel.run_program(halve_program(), np.zeros(ARENA, dtype=np.uint8))


def test_board_backend_without_pynq_is_a_clear_error(monkeypatch, tmp_path):
    import sys

    from shiftpu.sw.device_pynq import OverlayError, PynqDevice

    bit = tmp_path / "shiftpu.bit"
    bit.write_bytes(b"x")
    bit.with_suffix(".hwh").write_text("<EDKSYSTEM/>")
    monkeypatch.setitem(sys.modules, "pynq", None)
    with pytest.raises(OverlayError, match=r"pip install 'shiftpu\[board\]'"):
        PynqDevice(bit)
