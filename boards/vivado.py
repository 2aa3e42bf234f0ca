"""The Vivado flow of ``shiftpu build-hw``: write the Verilog, the IP-packaging, block-design and build Tcl,
and run them in batch mode where ``vivado`` is installed.

Everything short of the bitstream is produced on any machine; ``hw.json`` in the output folder records
the board, the config (and its hash), the files and the command that finishes the build.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Any

import jinja2

from shiftpu.arch.config import AccelConfig
from shiftpu.arch.regmap import REGISTER_SPACE_BYTES
from shiftpu.boards.board import Board, PsFamily
from shiftpu.boards.manifest import read_json_object
from shiftpu.boards.ps import ATTACHMENTS, ps_config, register_range
from shiftpu.boards.reports import ReportError, parse_worst_path, reports_json
from shiftpu.boards.rtl import TOP_MODULE
from shiftpu.errors import ShiftpuError

TEMPLATE_DIR = Path(__file__).parent / "tcl"
TEMPLATES = ("package_ip.tcl", "block_design.tcl", "build.tcl")
#: Format tag of hw.json.
HW_FORMAT = "shiftpu-hw/1"
HW_MANIFEST = "hw.json"
BD_NAME = "shiftpu"
BIT_FILE = f"{BD_NAME}.bit"
HWH_FILE = f"{BD_NAME}.hwh"
UTILIZATION_REPORT = "reports/utilization.rpt"
TIMING_REPORT = "reports/timing_summary.rpt"
#: ``report_timing`` of the worst failing path, written when timing is not met.
WORST_PATH_REPORT = "reports/worst_path.rpt"
#: Exit status of build.tcl when the routed design misses its clock.
TIMING_EXIT_STATUS = 2
REPORT_JSON = "reports/report.json"
IP_VENDOR = "shiftpu"
IP_LIBRARY = "shiftpu"
IP_VERSION = "1.0"
ACCEL_CELL = "shiftpu_accel_0"
N_STEPS = 8
_IP_FAMILY = {PsFamily.ZYNQ7000: "zynq", PsFamily.ZYNQMP: "zynquplus"}


class VivadoError(ShiftpuError):
    """The Vivado flow failed or its output folder is not what build-hw wrote."""


class TimingNotMetError(VivadoError):
    """The routed design misses the accelerator's clock (negative setup or hold slack, or Vivado's verdict)."""


@dataclass(frozen=True)
class HwOutput:
    """A build-hw output folder: where each artefact lives."""

    root: Path
    board: str
    part: str
    config: AccelConfig

    @property
    def verilog(self) -> Path:
        return self.root / "rtl" / f"{TOP_MODULE}.v"

    @property
    def bitstream(self) -> Path:
        return self.root / BIT_FILE

    @property
    def hwh(self) -> Path:
        return self.root / HWH_FILE

    @property
    def manifest(self) -> Path:
        return self.root / HW_MANIFEST


def vivado_command(jobs: int = 4) -> list[str]:
    """The batch command that runs the flow, from inside the output folder."""
    return ["vivado", "-mode", "batch", "-notrace", "-source", "build.tcl", "-log", "build/vivado.log",
            "-journal", "build/vivado.jou", "-tclargs", str(jobs)]


def _hex(value: int, digits: int = 8) -> str:
    return f"0x{value:0{digits}X}"


def template_context(board: Board, cfg: AccelConfig, jobs: int = 4) -> dict[str, Any]:
    """Values the Tcl templates are rendered with (everything board- or config-specific)."""
    ps = ATTACHMENTS[board.ps_family]
    return {
        "board": board, "cfg": cfg, "ps": ps, "top": TOP_MODULE,
        "config_hash": f"0x{cfg.config_hash():08x}",
        "ip_vendor": IP_VENDOR, "ip_library": IP_LIBRARY, "ip_version": IP_VERSION,
        "ip_vlnv": f"{IP_VENDOR}:{IP_LIBRARY}:{TOP_MODULE}:{IP_VERSION}", "ip_family": _IP_FAMILY[board.ps_family],
        "accel_cell": ACCEL_CELL, "bd_name": BD_NAME, "project_name": f"shiftpu_{board.name.replace('-', '_')}",
        "clock_mhz": f"{cfg.clock_mhz:g}",
        "ps_config": ps_config(board, cfg.clock_mhz), "automation_config": ps.automation_config,
        "register_base": _hex(ps.register_base), "register_range": _hex(register_range(), 4),
        "register_space": _hex(REGISTER_SPACE_BYTES, 3),
        "data_interconnect": cfg.axi_data_bits != board.hp_port_bits,
        "bit_file": BIT_FILE, "hwh_file": HWH_FILE, "n_steps": N_STEPS,
        "utilization_report": UTILIZATION_REPORT, "timing_report": TIMING_REPORT,
        "worst_path_report": WORST_PATH_REPORT,
        "vivado_command": " ".join(vivado_command(jobs)),
    }


def render_tcl(board: Board, cfg: AccelConfig, jobs: int = 4) -> dict[str, str]:
    """The three Tcl scripts (file name -> text) for a board and config."""
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(TEMPLATE_DIR), undefined=jinja2.StrictUndefined,
                             keep_trailing_newline=True, autoescape=False)
    ctx = template_context(board, cfg, jobs)
    return {name: env.get_template(name).render(ctx) for name in TEMPLATES}


def write_flow(board: Board, cfg: AccelConfig, out_dir: Path, verilog: str, jobs: int = 4) -> HwOutput:
    """Write the Verilog, the Tcl scripts and hw.json into ``out_dir``; returns where things are."""
    out = HwOutput(root=out_dir, board=board.name, part=board.part, config=cfg)
    out.verilog.parent.mkdir(parents=True, exist_ok=True)
    out.verilog.write_text(verilog)
    for name, text in render_tcl(board, cfg, jobs).items():
        (out_dir / name).write_text(text)
    (out_dir / "accel_config.json").write_text(json.dumps(cfg.to_dict(), indent=2) + "\n")
    ps = ATTACHMENTS[board.ps_family]
    manifest = {
        "format": HW_FORMAT, "board": board.name, "part": board.part, "ps_family": board.ps_family.value,
        "config": cfg.to_dict(), "config_hash": f"0x{cfg.config_hash():08x}",
        "top": TOP_MODULE, "ip_vlnv": f"{IP_VENDOR}:{IP_LIBRARY}:{TOP_MODULE}:{IP_VERSION}",
        "register_base": _hex(ps.register_base), "register_range": _hex(register_range(), 4),
        "clock_mhz": cfg.clock_mhz, "bitstream": BIT_FILE, "hwh": HWH_FILE,
        "verilog": str(out.verilog.relative_to(out_dir)), "scripts": list(TEMPLATES),
        "vivado_command": " ".join(vivado_command(jobs)),
    }
    out.manifest.write_text(json.dumps(manifest, indent=2) + "\n")
    return out


def read_hw_manifest(hw_dir: Path) -> dict[str, Any]:
    """hw.json of a build-hw output folder, checked for the fields other steps rely on."""
    path = hw_dir / HW_MANIFEST
    data = read_json_object(path, f"{hw_dir} is not a build-hw output folder: {HW_MANIFEST} is missing", VivadoError)
    if data.get("format") != HW_FORMAT:
        raise VivadoError(f"{path}: not a {HW_FORMAT} manifest (field 'format')")
    for key in ("board", "part", "config_hash", "bitstream", "hwh"):
        if not isinstance(data.get(key), str):
            raise VivadoError(f"{path}: field '{key}' is missing or not a string")
    return data


def collect_reports(hw_dir: Path) -> dict[str, Any] | None:
    """Parse Vivado's utilisation and timing reports into reports/report.json; None if Vivado wrote none."""
    utilization, timing = hw_dir / UTILIZATION_REPORT, hw_dir / TIMING_REPORT
    if not (utilization.is_file() and timing.is_file()):
        return None
    report = reports_json(utilization, timing)
    (hw_dir / REPORT_JSON).write_text(json.dumps(report, indent=2) + "\n")
    return report


class Progress(Enum):
    """What a line of Vivado's log says about the flow."""

    STEP = "step"
    WARNING = "warning"
    ERROR = "error"
    DONE = "done"
    INFO = "info"


_MARKER = re.compile(r"^SHIFTPU-(STEP|WARNING|ERROR|DONE|INFO)\s+(.*)$")
_VIVADO_ERROR = re.compile(r"^(ERROR|CRITICAL WARNING): \[")


@dataclass(frozen=True)
class LogEvent:
    kind: Progress
    text: str


def parse_log_line(line: str) -> LogEvent | None:
    """The flow event a line of Vivado's output reports (our SHIFTPU-* markers and Vivado errors), else None."""
    line = line.rstrip("\r\n")
    m = _MARKER.match(line)
    if m:
        return LogEvent(Progress[m.group(1)], m.group(2))
    if _VIVADO_ERROR.match(line):
        return LogEvent(Progress.ERROR if line.startswith("ERROR") else Progress.WARNING, line)
    return None


def vivado_available() -> bool:
    return shutil.which("vivado") is not None


def run_vivado(hw_dir: Path, on_event: Callable[[LogEvent], None], jobs: int = 4) -> int:
    """Run the build in ``hw_dir`` with Vivado in batch mode, reporting events; returns Vivado's exit status.

    Outputs of an earlier run (bitstream, hwh, reports) are removed first, so none can be mistaken for this run's.
    """
    (hw_dir / "build").mkdir(exist_ok=True)
    for stale in (BIT_FILE, HWH_FILE, UTILIZATION_REPORT, TIMING_REPORT, WORST_PATH_REPORT, REPORT_JSON):
        (hw_dir / stale).unlink(missing_ok=True)
    proc = subprocess.Popen(vivado_command(jobs), cwd=hw_dir, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, bufsize=1)
    assert proc.stdout is not None  # stdout=PIPE
    for line in proc.stdout:
        event = parse_log_line(line)
        if event is not None:
            on_event(event)
    return proc.wait()


def flow_error(hw_dir: Path, status: int, last_error: str | None) -> VivadoError:
    """The error for a Vivado run that exited with ``status``: a missed clock names the worst path (from
    reports/worst_path.rpt), anything else the last error Vivado or the flow reported."""
    log = f"(log: {hw_dir}/build/vivado.log)"
    cause = last_error or f"vivado exited with status {status}"
    if status != TIMING_EXIT_STATUS:
        return VivadoError(f"{cause} {log}")
    if not (hw_dir / WORST_PATH_REPORT).exists():  # setup and hold met, another check failed
        return TimingNotMetError(f"{cause} {log}")
    try:
        worst = parse_worst_path(hw_dir / WORST_PATH_REPORT).describe()
    except ReportError as e:
        return TimingNotMetError(f"{cause}; the worst path cannot be named: {e} {log}")
    return TimingNotMetError(f"{cause}; worst path {worst} ({WORST_PATH_REPORT}) {log}")
