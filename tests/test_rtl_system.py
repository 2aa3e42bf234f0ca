"""System tests: programs in an AXI RAM model, started over AXI4-Lite, compared with the golden model.

One small config is built (cached in the user's cache directory, see shiftpu.sim.rtl.build); every test runs
whole programs through the cocotb testbench in the Verilator executable.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

pytest.importorskip("cocotb")
pytest.importorskip("amaranth")

from rtl_support import SMALL, assert_bit_exact, random_program  # noqa: E402

from shiftpu.arch import limits  # noqa: E402
from shiftpu.arch.isa import INSTR_BYTES, INSTRUCTION_LAYOUT, ISA_VERSION, Dataflow, Instruction, Opcode, encode_program  # noqa: E402
from shiftpu.arch.regmap import IP_MAGIC, ErrorCode, Irq, Status  # noqa: E402
from shiftpu.sim.accelerator import AcceleratorError  # noqa: E402
from shiftpu.sim.golden import GoldenAccelerator  # noqa: E402
from shiftpu.sim.rtl import RtlAccelerator, SimMemory  # noqa: E402

pytestmark = pytest.mark.rtl


@pytest.fixture(scope="module")
def rtl():
    accel = RtlAccelerator(SMALL, memory=SimMemory.AXI_RAM)
    build = accel.build
    print(f"Verilator build: {'reused' if build.reused else f'{build.build_seconds:.1f} s (measured)'}")
    return accel


@pytest.mark.parametrize("memory", list(SimMemory))
@pytest.mark.parametrize("seed", [11, 12])
def test_random_layers_bit_exact(rtl, seed, memory):
    """Against the golden model with either memory model: cocotbext-axi's AxiRam or the compiled RAM."""
    print(f"memory model: {memory.value}")
    image = random_program(SMALL, seed, ["conv", "ic", "dw", "pool", "add", "move", "conv", "ic"])
    stats = assert_bit_exact(RtlAccelerator(SMALL, memory=memory), image)
    assert stats.cycles > 0 and stats.read_beats > 0 and stats.write_beats > 0


def test_random_layers_bit_exact_under_a_ddr_latency():
    """Every engine's reads queued ahead, the compiled RAM answering 37 cycles late."""
    image = random_program(SMALL, 13, ["conv", "pool", "dw", "add", "ic", "move"])
    stats = assert_bit_exact(RtlAccelerator(SMALL, memory=SimMemory.COMPILED, extra_read_latency=37), image)
    assert stats.cycles > 0


def test_registers_and_interrupt(rtl):
    prog = np.frombuffer(encode_program([], SMALL.config_hash()), dtype=np.uint8)
    result = rtl.run_raw(prog, np.zeros(64, np.uint8))
    assert result["IP_ID"] == IP_MAGIC
    assert result["ISA_VERSION"] == ISA_VERSION
    assert result["CONFIG_HASH"] == SMALL.config_hash()
    assert result["STATUS"] == 1 << Status.DONE
    assert result["IRQ_STATUS"] == 1 << Irq.DONE
    assert result["irq_after_ack"] == 0
    assert result["INSTR_RETIRED"] == 1
    assert result["RD_BEATS"] == 2 * INSTR_BYTES // SMALL.axi_bytes  # header + END


def _program_with(instrs, n_instr=None, config_hash=None, magic_byte=None):
    data = bytearray(encode_program(instrs, SMALL.config_hash() if config_hash is None else config_hash))
    if n_instr is not None:
        data[12:16] = n_instr.to_bytes(4, "little")
    if magic_byte is not None:
        data[0] = magic_byte
    return np.frombuffer(bytes(data), dtype=np.uint8)


def _move(**kw):
    return Instruction(Opcode.MOVE, in_h=2, in_w=2, in_c=3, out_h=2, out_w=2, out_c=3, out_addr=64, **kw)


def _expect_error(rtl, const, code: ErrorCode, pc: int):
    for backend in (GoldenAccelerator(SMALL), rtl):
        with pytest.raises(AcceleratorError) as info:
            backend.run_program(const, np.zeros(256, np.uint8))
        assert (info.value.code, info.value.pc) == (code, pc), backend.name


def test_bad_magic(rtl):
    _expect_error(rtl, _program_with([], magic_byte=0x00), ErrorCode.BAD_MAGIC, 0)


def test_config_hash_mismatch(rtl):
    _expect_error(rtl, _program_with([], config_hash=SMALL.config_hash() ^ 1), ErrorCode.CONFIG_HASH, 0)


def test_illegal_opcode(rtl):
    const = _program_with([_move(), _move()]).copy()
    const[2 * INSTR_BYTES] = 0x0F  # second instruction: opcode 15
    _expect_error(rtl, const, ErrorCode.ILLEGAL_OPCODE, 1)


def test_bad_field(rtl):
    const = _program_with([_move(), _move()]).copy()
    fields = _move().to_fields() | {"in_c": 4}  # MOVE with in_c != out_c
    raw = INSTRUCTION_LAYOUT.encode(fields).to_bytes(INSTR_BYTES, "little")
    const[2 * INSTR_BYTES: 3 * INSTR_BYTES] = np.frombuffer(raw, dtype=np.uint8)
    _expect_error(rtl, const, ErrorCode.BAD_FIELD, 1)


def test_no_end(rtl):
    _expect_error(rtl, _program_with([_move(), _move()], n_instr=2), ErrorCode.NO_END, 2)


@pytest.mark.parametrize("fields", [
    dict(dataflow=Dataflow.INPUT_CHANNEL, in_c=8, ic_tile=3),  # input tile inside a pe_px group and a block
    dict(in_c=16, ic_tile=4),  # several input tiles, not on channel blocks
    dict(in_w=13, out_w=13, strip_w=13, out_c=36, oc_tile=36),  # 36 x 16 accumulators > acc_buffer_words 512
])
def test_tiling_rules_are_refused_like_the_golden_model(rtl, fields):
    """Instructions that break a rule of shiftpu.arch.limits stop with BAD_FIELD at their pc on the RTL."""
    conv = Instruction(Opcode.CONV, **({"in_h": 4, "in_w": 4, "in_c": 8, "out_h": 4, "out_w": 4, "out_c": 4,
                                        "strip_w": 4, "ic_tile": 8, "oc_tile": 4, "out_addr": 1024,
                                        "w_addr": 256, "qp_addr": 512} | fields))
    assert limits.violation(conv, SMALL) is not None
    const = np.zeros(1024, np.uint8)
    prog = _program_with([conv])
    const[: prog.size] = prog
    with pytest.raises(AcceleratorError) as info:
        rtl.run_program(const, np.zeros(4096, np.uint8))
    assert (info.value.code, info.value.pc) == (ErrorCode.BAD_FIELD, 0)


@pytest.mark.parametrize("field,code", [("in_addr", ErrorCode.AXI_READ), ("out_addr", ErrorCode.AXI_WRITE)])
def test_axi_error_responses(rtl, field, code):
    """A tensor beyond the memory: the compiled RAM answers SLVERR, the accelerator stops with the AXI error."""
    from shiftpu.sim.rtl.sim_ram import RAM_BYTES

    const = _program_with([_move(), replace(_move(), **{field: RAM_BYTES})])
    _expect_error(RtlAccelerator(SMALL, memory=SimMemory.COMPILED), const, code, 1)


def test_a_run_past_its_wall_clock_limit_stops_with_the_registers():
    """`run --timeout` on the rtl backend: the testbench stops the simulation at the limit (looking at the clock
    every 20,000 cycles) and the run fails with the registers read then; the same program finishes without it."""
    from rtl_support import square_conv

    from shiftpu.sim.rtl import RtlTimeout, cases

    conv = square_conv(3, 1, 1, in_c=16, in_h=32, in_w=32, out_c=16, strip_w=16, ic_tile=16, oc_tile=16)
    b = cases.ProgramBuilder(SMALL)
    cases.add_conv(b, np.random.default_rng(21), conv)  # about 150,000 cycles on the 4x4 array
    image = b.image()
    print("seed 21")
    with pytest.raises(RtlTimeout) as e:
        RtlAccelerator(SMALL, memory=SimMemory.COMPILED, wall_timeout_s=1e-3).run_program(image.const,
                                                                                          image.act.copy())
    assert str(e.value).startswith("the RTL simulation did not finish within 0.001 s (wall clock) and was stopped "
                                   "(STATUS=0x1, ERROR_CODE=0x0, PC=0x0, CYCLES_LO=0x")
    assert e.value.registers["CYCLES_LO"] >= 20_000 and e.value.registers["STATUS"] == 1 << Status.BUSY
    assert_bit_exact(RtlAccelerator(SMALL, memory=SimMemory.COMPILED, wall_timeout_s=3600), image)
