"""Fault soak: frames through the CPU/fabric pipeline on the simulated PYNQ device while the accelerator, at random
STARTs (seeded), hangs, stops with an error code, writes outside its program or its arena, or reports DONE before
its last instruction. Every good frame comes back in order and equal to the golden model's output; every bad one
comes back in its place as a failure naming its fault; nothing is lost, duplicated or reordered, and device memory,
host memory and threads do not grow. A wrong value written inside the arena is not injected: nothing but a second
computation can tell it (see shiftpu.sw.driver)."""

from __future__ import annotations

import gc
import threading
import tracemalloc
from collections import Counter

import numpy as np
import pytest

pytest.importorskip("pynq")

from qdq_graphs import QdqBuilder, random_input  # noqa: E402

from shiftpu.arch.regmap import OFFSET, Ctrl, ErrorCode  # noqa: E402
from shiftpu.boards import load_board  # noqa: E402
from shiftpu.compiler.driver import compile_model  # noqa: E402
from shiftpu.sim.accelerator import AcceleratorError  # noqa: E402
from shiftpu.sim.golden import GoldenAccelerator  # noqa: E402
from shiftpu.sw.device_pynq import PynqDevice  # noqa: E402
from shiftpu.sw.driver import (  # noqa: E402
    GUARD_BYTES,
    AcceleratorFault,
    AcceleratorTimeout,
    Driver,
    DriverAccelerator,
    IncompleteRun,
    OutOfBoundsWrite,
)
from shiftpu.sw.executor import Executor  # noqa: E402
from shiftpu.sw.pipeline import FrameFailure, Pipeline  # noqa: E402
from shiftpu.sw.pipeline_model import ArenaPool, ModelStages  # noqa: E402
from shiftpu.sw.pynq_sim import simulated_device, write_sim_overlay  # noqa: E402

BOARD = "pynq-z2"
#: Probability of each fault at a START.
#: The driver's limit for a run: a good frame of this small model takes milliseconds, and must not reach it even on
#: a heavily loaded machine; each injected hang costs this long.
HANG_TIMEOUT_S = 2.0
FAULTS = {"hang": 0.01, "error": 0.02, "past_arena": 0.015, "past_program": 0.01, "early_done": 0.015}
#: What each fault must come back as: the exception type and a piece of its message.
REPORTED = {"hang": (AcceleratorTimeout, f"did not finish within {HANG_TIMEOUT_S:g} s"),
            "error": (AcceleratorError, "AXI_READ"),
            "past_arena": (OutOfBoundsWrite, "outside the activation arena"),
            "past_program": (OutOfBoundsWrite, "outside the program"),
            "early_done": (IncompleteRun, "reported DONE after 2 of the program's 3 instructions")}
#: Distinct input frames, cycled.
INPUTS = 8


class FaultPlan:
    """Draws the fault of every START (seeded) and records them in START order."""

    def __init__(self, seed: int):
        self.rng = np.random.default_rng(seed)
        self.kinds = [None, *FAULTS]
        self.p = [1 - sum(FAULTS.values()), *FAULTS.values()]
        self.drawn: list[str | None] = []
        self.lock = threading.Lock()
        self.hung: list[threading.Event] = []  #: one per hung run, set when the run is cut off

    def draw(self) -> str | None:
        with self.lock:
            fault = self.kinds[self.rng.choice(len(self.kinds), p=self.p)]
            self.drawn.append(fault)
            return fault

    def backend(self, config) -> FaultyGolden:
        """The factory the simulated device configures its fabric with."""
        return FaultyGolden(config, self)

    def hang(self) -> None:
        """Block until the run is cut off (:meth:`cut_off`)."""
        cut = threading.Event()
        with self.lock:
            self.hung.append(cut)
        cut.wait()

    def cut_off(self) -> None:
        """CTRL.SOFT_RESET was written: the hung run ends (it writes nothing: the register model drops it)."""
        with self.lock:
            for cut in self.hung:
                cut.set()
            self.hung.clear()


class FaultyGolden(GoldenAccelerator):
    """The golden model with the plan's fault at each START."""

    def __init__(self, config, plan: FaultPlan):
        super().__init__(config)
        self.plan = plan

    def run_program(self, const, act):
        fault = self.plan.draw()
        if fault == "hang":
            self.plan.hang()
            raise RuntimeError("run cut off by the soft reset")
        if fault == "error":
            raise AcceleratorError(ErrorCode.AXI_READ, 0, "injected")
        stats = super().run_program(const, act)
        if fault == "past_arena":
            act[-GUARD_BYTES + 5] ^= 0x41  # the segment runs on into the arena's end guard
        elif fault == "past_program":
            const[-1] ^= 0x41
        elif fault == "early_done":
            return type(stats)(backend=stats.backend, instructions=stats.instructions - 1)
        return stats


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    d = tmp_path_factory.mktemp("soak")
    b = QdqBuilder((4, 12, 12), seed=3)
    b.output(b.conv(b.conv(b.x, 8, 3, act="relu"), 4, 3, act="relu"))
    m = b.model()
    compile_model(m, BOARD, d / "out")
    inputs = [random_input(m, seed=s) for s in range(INPUTS)]
    reference = Executor(d / "out")
    assert len(reference.manifest["segments"]) == 1  # one START per frame
    return d, reference, inputs, [reference.run(x) for x in inputs]


def soak(model, frames: int, seed: int) -> Counter:
    folder, reference, inputs, expected = model
    print("seed", seed, "frames", frames)
    plan = FaultPlan(seed)
    cfg = reference.compiled.config
    bit = write_sim_overlay(folder / f"overlay-{seed}-{frames}", load_board(BOARD), cfg)
    device = PynqDevice(bit, pynq_device=simulated_device(plan.backend), name="pynq-sim")
    registers = device.overlay.device.model
    write = registers.write

    def write_and_cut_off(offset: int, value: int) -> None:  # the thread of a run cut off by the soft reset ends
        write(offset, value)
        if offset == OFFSET["CTRL"] and value & (1 << Ctrl.SOFT_RESET):
            plan.cut_off()

    registers.write = write_and_cut_off
    accel = DriverAccelerator(Driver(device, timeout_s=HANG_TIMEOUT_S), cfg, load_board(BOARD))
    ddr = device.overlay.device.default_memory
    pool = ArenaPool([accel.arena(reference.manifest["arena_bytes"]) for _ in range(2)])
    stages = ModelStages(Executor(reference.compiled, backend=accel), pool)
    pipeline = Pipeline(stages.stages(), depth=2, on_stop=pool.close, frame_errors=(AcceleratorError, AcceleratorFault))
    threads_before = threading.active_count()
    seen = Counter()
    warm = {}
    tracemalloc.start()
    try:
        for seq, result in pipeline.run(inputs[i % INPUTS] for i in range(frames)):
            assert seq == sum(seen.values())  # in order, none lost or repeated
            fault = plan.drawn[seq]
            if fault is None:
                assert not isinstance(result, FrameFailure), f"frame {seq}: {result.error}"
                assert all(np.array_equal(a, b) for a, b in zip(result.outputs, expected[seq % INPUTS], strict=True)), \
                    f"frame {seq}: wrong output"
            else:
                kind, words = REPORTED[fault]
                assert isinstance(result, FrameFailure) and result.stage == "fabric", f"frame {seq}: {fault} not seen"
                assert type(result.error) is kind and words in str(result.error), f"frame {seq}: {result.error}"
            seen[fault or "good"] += 1
            if seq == 40:  # warmed up: programs uploaded, arenas allocated, every lazy import done
                gc.collect()
                warm = {"ddr": ddr.allocated_bytes, "heap": tracemalloc.get_traced_memory()[0]}
        gc.collect()
        heap = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    assert sum(seen.values()) == frames == len(plan.drawn) and pipeline.stats.failed == frames - seen["good"]
    assert ddr.allocated_bytes <= warm["ddr"]
    assert heap - warm["heap"] < 2 << 20, f"host memory grew by {heap - warm['heap']} bytes"
    for _ in range(100):  # hung runs end once they are cut off
        if threading.active_count() <= threads_before:
            break
        threading.Event().wait(0.05)
    assert threading.active_count() <= threads_before
    accel.driver.free_buffers()
    print(dict(seen))
    return seen


def test_fault_soak_every_fault_reported_every_good_frame_right(model):
    seen = soak(model, frames=300, seed=5)
    assert seen["good"] > 200 and all(seen[k] > 0 for k in FAULTS), seen


@pytest.mark.slow
def test_fault_soak_10000_frames(model):
    seen = soak(model, frames=10_000, seed=18)
    assert all(seen[k] > 50 for k in FAULTS), seen
