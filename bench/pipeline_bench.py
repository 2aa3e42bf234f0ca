"""Pipeline benchmark on the golden backend: efficiency, GIL contention, pipelined vs frame-after-frame
throughput (alternating, same inputs), and a long soak checking order, outputs and memory.

    python -m bench.pipeline_bench [--model FOLDER] [--frames 10000] [--out bench/results/pipeline.json]

Without ``--model`` it uses the shipped demo detector (compiled for pynq-z2) when present, else a 64x64
test detector. All figures are measured on this machine (wall-clock; memory by tracemalloc and RSS).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import tempfile
import tracemalloc
from pathlib import Path

import numpy as np

from shiftpu.sw.bench_run import BenchOptions, run_bench
from shiftpu.sw.device_backends import RuntimeBackend, open_accelerator
from shiftpu.sw.executor import Executor
from shiftpu.sw.pipeline import Pipeline
from shiftpu.sw.pipeline_model import ArenaPool, ModelStages, arenas_wanted

DEMO = Path(__file__).resolve().parents[1] / "shiftpu" / "models" / "shapes_detector.onnx"


def _compiled_model(work: Path) -> Path:
    from shiftpu.compiler.driver import compile_model

    out = work / "model"
    if DEMO.is_file():
        compile_model(DEMO, "pynq-z2", out)
    else:
        sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
        from qdq_graphs import detector

        compile_model(detector(size=64, width=8), "pynq-z2", out)
    return out


def _photos(work: Path) -> Path:
    """The two photographs shipped with scikit-learn (427 x 640), as PNG files: real letterboxing work."""
    from PIL import Image
    from sklearn.datasets import load_sample_images

    folder = work / "photos"
    folder.mkdir()
    for i, img in enumerate(load_sample_images().images):
        Image.fromarray(img).save(folder / f"photo{i}.png")
    return folder


def gil_check(folder: Path, photos: Path, frames: int = 30) -> dict:
    """Fabric-stage time alone vs. with a preprocessing thread letterboxing photos all the while.

    A ratio near 1 on a machine with a spare core means the golden model and the driver leave the GIL
    free for the CPU stages (and the other way round)."""
    import threading
    import time

    from shiftpu.sw.images import load_folder
    from shiftpu.sw.preprocess import image_to_tensor, letterbox

    probe = Executor(folder)
    accel = open_accelerator(RuntimeBackend.GOLDEN, probe.compiled.config, probe.compiled.board)
    executor = Executor(probe.compiled, backend=accel)
    spec = executor.inputs[0]
    x = np.random.default_rng(1).uniform(-1, 1, size=tuple(spec["shape"])).astype(spec["dtype"])
    images = [img for _, img in load_folder(photos)]

    def fabric_ms() -> float:
        times = []
        for _ in range(frames):
            t0 = time.perf_counter()
            executor.run(x)
            times.append(time.perf_counter() - t0)
        return 1e3 * float(np.median(times))

    fabric_ms()  # warm-up
    alone = fabric_ms()
    stop = threading.Event()
    done = [0]

    def cpu_stage() -> None:
        while not stop.is_set():
            image_to_tensor(letterbox(images[done[0] % len(images)], tuple(spec["shape"][2:]))[0])
            done[0] += 1

    t = threading.Thread(target=cpu_stage)
    t.start()
    t0 = time.perf_counter()
    together = fabric_ms()
    elapsed = time.perf_counter() - t0
    stop.set()
    t.join()
    return {"fabric_ms_alone_median": round(alone, 3), "fabric_ms_with_preprocess_thread_median": round(together, 3),
            "slowdown": round(together / alone, 3), "preprocess_frames_meanwhile": done[0],
            "preprocess_fps_meanwhile": round(done[0] / elapsed, 1)}


def sequential_vs_pipelined(folder: Path, photos: Path, frames: int = 100, rounds: int = 3) -> dict:
    """Throughput of the same stages run frame after frame and pipelined, alternating, on the same inputs."""
    import time

    from shiftpu.sw.images import load_folder
    from shiftpu.sw.pipeline import run_all

    probe = Executor(folder)
    accel = open_accelerator(RuntimeBackend.GOLDEN, probe.compiled.config, probe.compiled.board)
    executor = Executor(probe.compiled, backend=accel)
    pool = ArenaPool([accel.arena(probe.compiled.manifest["arena_bytes"])
                      for _ in range(arenas_wanted(probe.manifest))])
    stages = ModelStages(executor, pool).stages()
    images = [img for _, img in load_folder(photos)]
    seq_fps, pipe_fps = [], []
    for _ in range(rounds):
        t0 = time.perf_counter()
        for i in range(frames):
            item = images[i % len(images)]
            for st in stages:
                item = st.fn(item)
        seq_fps.append(frames / (time.perf_counter() - t0))
        stats = run_all(Pipeline(stages, depth=2, on_stop=pool.close), (images[i % len(images)] for i in range(frames)))
        pipe_fps.append(stats.fps)
    return {"frames_per_round": frames, "sequential_fps": [round(v, 1) for v in seq_fps],
            "pipelined_fps": [round(v, 1) for v in pipe_fps],
            "speedup_median": round(float(np.median(pipe_fps) / np.median(seq_fps)), 3)}


def soak(folder: Path, frames: int) -> dict:
    """``frames`` distinct-valued frames through the pipeline; checks order, completeness, content, memory."""
    probe = Executor(folder)
    accel = open_accelerator(RuntimeBackend.GOLDEN, probe.compiled.config, probe.compiled.board)
    executor = Executor(probe.compiled, backend=accel)
    pool = ArenaPool([accel.arena(probe.compiled.manifest["arena_bytes"])
                      for _ in range(arenas_wanted(probe.manifest))])
    spec = executor.inputs[0]
    rng = np.random.default_rng(0)
    bank = [rng.uniform(-1, 1, size=tuple(spec["shape"])).astype(spec["dtype"]) for _ in range(16)]
    expected = [executor.run(x) for x in bank]
    pipeline = Pipeline(ModelStages(executor, pool).stages(), depth=2, on_stop=pool.close)
    tracemalloc.start()
    checkpoints: dict[int, int] = {}
    wrong = 0
    count = 0
    for seq, result in pipeline.run(bank[i % len(bank)] for i in range(frames)):
        assert seq == count
        count += 1
        if not all(np.array_equal(a, b) for a, b in zip(result.outputs, expected[seq % len(bank)], strict=True)):
            wrong += 1
        if count in (frames // 5, frames):
            checkpoints[count] = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    first, last = checkpoints[frames // 5], checkpoints[frames]
    return {"frames_in": frames, "frames_out": count, "wrong_outputs": wrong,
            "traced_bytes_at_20pct": first, "traced_bytes_at_end": last, "traced_growth_bytes": last - first,
            "traced_growth_note": "includes the pipeline's per-frame latency record (8 bytes/frame)",
            "max_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
            "fps": round(pipeline.stats.fps, 2), "pipeline_efficiency": round(pipeline.stats.efficiency, 3)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", type=Path, help="compiled folder (default: demo detector, compiled here)")
    ap.add_argument("--frames", type=int, default=10_000, help="frames in the soak")
    ap.add_argument("--efficiency-frames", type=int, default=300)
    ap.add_argument("--out", type=Path, default=Path("bench/results/pipeline.json"))
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory() as work:
        folder = args.model or _compiled_model(Path(work))
        photos = _photos(Path(work))
        eff = run_bench(BenchOptions(folder=folder, backend="golden", frames=args.efficiency_frames, input=photos))
        eff["input"] = "2 photographs (sklearn sample images, 427x640) letterboxed to the model input, cycled"
        source = json.loads((Path(folder) / "manifest.json").read_text()).get("source", "")
        result = {"model": f"{folder} (compiled from {source})",
                  "efficiency_run": eff, "gil": gil_check(folder, photos),
                  "sequential_vs_pipelined": sequential_vs_pipelined(folder, photos), "soak": soak(folder, args.frames),
                  "kind": "measured", "load_average_1min": round(os.getloadavg()[0], 2),
                  "cpus": os.cpu_count()}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))
    ok = (result["soak"]["frames_out"] == args.frames and result["soak"]["wrong_outputs"] == 0)
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
