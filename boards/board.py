"""The Board record and its loader (JSON files next to this module)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from shiftpu.arch.config import AccelConfig, ConfigError
from shiftpu.errors import ShiftpuError

BOARD_DIR = Path(__file__).parent
RESOURCE_KINDS = ("LUT", "FF", "DSP", "BRAM36", "URAM")
PS_FAMILIES = ("zynq7000", "zynqmp")
YOSYS_FAMILIES = ("xc7", "xcup")


class BoardError(ShiftpuError):
    """A board name is unknown or a board file is malformed."""


@dataclass(frozen=True)
class Board:
    """A Zynq board: its device, processing system, memory, power rails and default accelerator."""

    name: str  #: the name users type (`--board`), equal to the file name
    title: str  #: human-readable name
    part: str  #: Vivado part number
    ps_family: str  #: "zynq7000" or "zynqmp" (Zynq UltraScale+)
    yosys_family: str  #: family for `synth_xilinx -family` ("xc7" or "xcup")
    resources: dict[str, int]  #: available LUT, FF, DSP, BRAM36, URAM
    hp_port_bits: int  #: width of the PS high-performance AXI port the accelerator masters
    fabric_clock_mhz: float  #: clock the PS provides to the accelerator
    ddr_bandwidth_gbps: float  #: usable DDR bandwidth from the fabric, GB/s
    power_rails: tuple[str, ...]  #: PYNQ rail names summed for fabric+PS power (empty: no readable rails)
    static_power_w: float  #: board power with the fabric idle, watts (for the power estimate)
    accel: AccelConfig  #: default accelerator for this board
    path: Path  #: the file it was read from

    @property
    def ddr_bytes_per_cycle(self) -> float:
        """DDR bytes per accelerator clock cycle (bandwidth / clock)."""
        return self.ddr_bandwidth_gbps * 1e9 / (self.accel.clock_mhz * 1e6)


_FIELDS: dict[str, type | tuple[type, ...]] = {
    "name": str, "title": str, "part": str, "ps_family": str, "yosys_family": str, "resources": dict,
    "hp_port_bits": int, "fabric_clock_mhz": (int, float), "ddr_bandwidth_gbps": (int, float),
    "power_rails": list, "static_power_w": (int, float), "accel": dict,
}


def load_board_file(path: str | Path) -> Board:
    """Parse and validate one board file."""
    path = Path(path)
    try:
        data: Any = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise BoardError(f"{path}: cannot read board file: {e}") from None
    if not isinstance(data, dict):
        raise BoardError(f"{path}: a board file must hold a JSON object")
    for key, typ in _FIELDS.items():
        if key not in data:
            raise BoardError(f"{path}: missing field '{key}'")
        if not isinstance(data[key], typ) or isinstance(data[key], bool):
            raise BoardError(f"{path}: field '{key}' has the wrong type ({type(data[key]).__name__})")
    unknown = sorted(set(data) - set(_FIELDS))
    if unknown:
        raise BoardError(f"{path}: unknown field(s) {', '.join(unknown)}")
    if data["name"] != path.stem:
        raise BoardError(f"{path}: field 'name' is {data['name']!r} but the file is named {path.stem!r}")
    if data["ps_family"] not in PS_FAMILIES:
        raise BoardError(f"{path}: field 'ps_family' must be one of {PS_FAMILIES}")
    if data["yosys_family"] not in YOSYS_FAMILIES:
        raise BoardError(f"{path}: field 'yosys_family' must be one of {YOSYS_FAMILIES}")
    res = data["resources"]
    for kind in RESOURCE_KINDS:
        if not isinstance(res.get(kind), int) or res[kind] < 0:
            raise BoardError(f"{path}: field 'resources.{kind}' must be a non-negative integer")
    for key in ("fabric_clock_mhz", "ddr_bandwidth_gbps", "static_power_w"):
        if data[key] <= 0:
            raise BoardError(f"{path}: field '{key}' must be positive")
    if not all(isinstance(r, str) for r in data["power_rails"]):
        raise BoardError(f"{path}: field 'power_rails' must be a list of rail names")
    try:
        accel = AccelConfig.from_dict(data["accel"], source=f"{path}: field 'accel'")
    except ConfigError as e:
        raise BoardError(str(e)) from None
    if accel.axi_data_bits > data["hp_port_bits"]:
        raise BoardError(f"{path}: field 'accel.axi_data_bits' ({accel.axi_data_bits}) exceeds hp_port_bits")
    return Board(
        name=data["name"], title=data["title"], part=data["part"], ps_family=data["ps_family"],
        yosys_family=data["yosys_family"], resources={k: res[k] for k in RESOURCE_KINDS},
        hp_port_bits=data["hp_port_bits"], fabric_clock_mhz=float(data["fabric_clock_mhz"]),
        ddr_bandwidth_gbps=float(data["ddr_bandwidth_gbps"]), power_rails=tuple(data["power_rails"]),
        static_power_w=float(data["static_power_w"]), accel=accel, path=path,
    )


def board_names() -> list[str]:
    """Names of the shipped boards."""
    return sorted(p.stem for p in BOARD_DIR.glob("*.json"))


def load_board(name: str) -> Board:
    """The shipped board of that name; an unknown name lists the known ones."""
    path = BOARD_DIR / f"{name}.json"
    if not path.exists():
        raise BoardError(f"unknown board '{name}': known boards are {', '.join(board_names())}")
    return load_board_file(path)


DEFAULT_BOARD = "ultra96v2"
