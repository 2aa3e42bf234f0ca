"""The pipeline: order, completeness, overlap of stages, clean stop on errors and Ctrl-C, trace output."""

from __future__ import annotations

import json
import random
import threading
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shiftpu.sw.pipeline import Pipeline, Stage, run_all
from shiftpu.sw.trace import Trace


def _sleepy(name: str, seed: int, scale: float = 0.002) -> Stage:
    rng = random.Random(seed)
    lock = threading.Lock()

    def fn(x):
        with lock:
            d = rng.random() * scale
        time.sleep(d)
        return x + [name]

    return Stage(name, fn)


def _pipeline_threads() -> list[str]:
    return [t.name for t in threading.enumerate() if t.name.startswith("shiftpu-")]


def test_results_complete_and_in_order_with_jittery_stages():
    print("seeds 1, 2, 3")
    p = Pipeline([_sleepy("pre", 1), _sleepy("fabric", 2), _sleepy("post", 3)], depth=2)
    out = list(p.run([i] for i in range(200)))
    assert [seq for seq, _ in out] == list(range(200))
    assert all(r == [i, "pre", "fabric", "post"] for i, (_, r) in enumerate(out))
    assert p.stats.frames == 200 and len(p.stats.latencies_s) == 200
    assert not _pipeline_threads()


def test_stages_overlap_on_successive_frames():
    trace = Trace()
    stages = [Stage(n, lambda x: time.sleep(0.01) or x) for n in ("pre", "fabric", "post")]
    stats = run_all(Pipeline(stages, depth=2, trace=trace), range(12))
    spans = {(s.stage, s.frame): s for s in trace.spans}
    assert len(spans) == 36
    # while the fabric works on a frame, preprocessing of the next one runs at the same time (a sequential run has
    # no such pair; a loaded machine may delay a thread past one pair, not past all of them)
    overlapping = [k for k in range(11)
                   if spans[("pre", k + 1)].start < spans[("fabric", k)].end
                   and spans[("fabric", k)].start < spans[("pre", k + 1)].end]
    assert len(overlapping) >= 6, overlapping
    assert set(stats.stage_mean_ms()) == {"pre", "fabric", "post"}
    assert stats.efficiency > 0.5


def test_exception_in_a_stage_stops_every_thread_and_propagates():
    def boom(x):
        if x == 5:
            raise ValueError("bad frame 5")
        return x

    p = Pipeline([Stage("pre", lambda x: x), Stage("fabric", boom), Stage("post", lambda x: x)])
    seen = []
    with pytest.raises(ValueError, match="bad frame 5"):
        for seq, _ in p.run(range(1000)):
            seen.append(seq)
    assert seen == list(range(len(seen))) and len(seen) <= 5
    assert not _pipeline_threads()


def test_keyboard_interrupt_in_the_consumer_stops_cleanly():
    p = Pipeline([Stage("pre", lambda x: x), Stage("post", lambda x: x)])
    with pytest.raises(KeyboardInterrupt):
        for seq, _ in p.run(iter(range(10**9))):
            if seq == 20:
                raise KeyboardInterrupt
    assert not _pipeline_threads()


def test_failing_frame_source_propagates():
    def frames():
        yield 1
        raise OSError("camera unplugged")

    with pytest.raises(OSError, match="camera unplugged"):
        list(Pipeline([Stage("pre", lambda x: x)]).run(frames()))
    assert not _pipeline_threads()


def test_chrome_trace_and_gantt(tmp_path):
    trace = Trace()
    run_all(Pipeline([Stage("pre", lambda x: x), Stage("fabric", lambda x: x)], trace=trace), range(5))
    doc = json.loads(trace.write_chrome(tmp_path / "t.json").read_text())
    spans = [e for e in doc["traceEvents"] if e["ph"] == "X"]
    assert len(spans) == 10 and {e["args"]["frame"] for e in spans} == set(range(5))
    assert all(e["dur"] >= 0 for e in spans)
    png = trace.write_gantt(tmp_path / "g.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@settings(max_examples=15, deadline=None)
@given(n_stages=st.integers(1, 4), depth=st.integers(1, 4), frames=st.integers(0, 60), seed=st.integers(0, 999))
def test_any_shape_of_pipeline_keeps_order(n_stages, depth, frames, seed):
    stages = [_sleepy(f"s{i}", seed + i, scale=0.0005) for i in range(n_stages)]
    out = list(Pipeline(stages, depth=depth).run([i] for i in range(frames)))
    assert [r[0] for _, r in out] == list(range(frames))
    assert all(len(r) == n_stages + 1 for _, r in out)
