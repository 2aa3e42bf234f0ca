"""The Board record and its loader (JSON files next to this module)."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Any

from shiftpu.arch.config import AccelConfig, ConfigError
from shiftpu.errors import ShiftpuError

BOARD_DIR = Path(__file__).parent
RESOURCE_KINDS = ("LUT", "FF", "DSP", "BRAM36", "URAM")
DEFAULT_BOARD = "ultra96v2"


class PsFamily(str, Enum):
    """The processing system of the device (decides the Vivado PS IP and its presets)."""

    ZYNQ7000 = "zynq7000"  #: Zynq-7000: processing_system7, S_AXI_HP0, M_AXI_GP0, IRQ_F2P
    ZYNQMP = "zynqmp"  #: Zynq UltraScale+ MPSoC: zynq_ultra_ps_e, S_AXI_HP0_FPD, M_AXI_HPM0_FPD, pl_ps_irq0


class YosysFamily(str, Enum):
    """Device family for ``synth_xilinx -family``."""

    XC7 = "xc7"  #: 7-series (Zynq-7000)
    XCUP = "xcup"  #: UltraScale+


class BoardError(ShiftpuError):
    """A board name is unknown or a board file is malformed."""


@dataclass(frozen=True)
class Board:
    """A Zynq board: its device, processing system, memory, power rails and default accelerator."""

    name: str  #: the name users type (`--board`), equal to the file name
    title: str  #: human-readable name
    part: str  #: Vivado part number
    vivado_board_part: str  #: Vivado board part without version ("vendor:board:part0"), for the PS presets
    ps_family: PsFamily  #: the processing system
    yosys_family: YosysFamily  #: family for `synth_xilinx -family`
    resources: dict[str, int]  #: available LUT, FF, DSP, BRAM36, URAM
    hp_port_bits: int  #: width of the PS high-performance AXI port the accelerator masters
    fabric_clock_mhz: float  #: clock the PS provides to the accelerator
    ddr_bandwidth_gbps: float  #: usable DDR bandwidth from the fabric, GB/s
    #: DDR read latency seen by the accelerator's HP port (read command to first beat), ns; a planning figure
    ddr_read_latency_ns: float
    power_rails: tuple[str, ...]  #: PYNQ rail names summed for fabric+PS power (empty: no readable rails)
    static_power_w: float  #: board power with the fabric idle, watts (for the power estimate)
    accel: AccelConfig  #: default accelerator for this board
    path: Path  #: the file it was read from

    @property
    def ddr_bytes_per_cycle(self) -> float:
        """DDR bytes per accelerator clock cycle (bandwidth / clock)."""
        return self.ddr_bandwidth_gbps * 1e9 / (self.accel.clock_mhz * 1e6)

    @property
    def ddr_read_latency_cycles(self) -> int:
        """DDR read latency in accelerator clock cycles (rounded up)."""
        return math.ceil(self.ddr_read_latency_ns * self.accel.clock_mhz / 1e3 - 1e-9)


_FIELDS: dict[str, type | tuple[type, ...]] = {
    "name": str, "title": str, "part": str, "vivado_board_part": str, "ps_family": str, "yosys_family": str,
    "resources": dict, "hp_port_bits": int, "fabric_clock_mhz": (int, float), "ddr_bandwidth_gbps": (int, float),
    "ddr_read_latency_ns": (int, float),
    "power_rails": list, "static_power_w": (int, float), "accel": dict,
}
_HP_PORT_BITS = {PsFamily.ZYNQ7000: (32, 64), PsFamily.ZYNQMP: (32, 64, 128)}


def _enum_field(path: Path, key: str, value: str, enum: type[Enum]) -> Any:
    try:
        return enum(value)
    except ValueError:
        allowed = ", ".join(repr(m.value) for m in enum)  # type: ignore[attr-defined]
        raise BoardError(f"{path}: field '{key}' is {value!r}, must be one of {allowed}") from None


def load_board_file(path: str | Path) -> Board:
    """Parse and validate one board file."""
    path = Path(path)
    try:
        data: Any = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as e:
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
    ps_family = _enum_field(path, "ps_family", data["ps_family"], PsFamily)
    yosys_family = _enum_field(path, "yosys_family", data["yosys_family"], YosysFamily)
    res = data["resources"]
    for kind in RESOURCE_KINDS:
        if not isinstance(res.get(kind), int) or isinstance(res.get(kind), bool) or res[kind] < 0:
            raise BoardError(f"{path}: field 'resources.{kind}' must be a non-negative integer")
    extra = sorted(set(res) - set(RESOURCE_KINDS))
    if extra:
        raise BoardError(f"{path}: field 'resources' has unknown kind(s) {', '.join(extra)}")
    if data["hp_port_bits"] not in _HP_PORT_BITS[ps_family]:
        raise BoardError(f"{path}: field 'hp_port_bits' is {data['hp_port_bits']}, a {ps_family.value} HP port "
                         f"is one of {_HP_PORT_BITS[ps_family]}")
    for key in ("fabric_clock_mhz", "ddr_bandwidth_gbps", "ddr_read_latency_ns", "static_power_w"):
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
        name=data["name"], title=data["title"], part=data["part"], vivado_board_part=data["vivado_board_part"],
        ps_family=ps_family, yosys_family=yosys_family, resources={k: res[k] for k in RESOURCE_KINDS},
        hp_port_bits=data["hp_port_bits"], fabric_clock_mhz=float(data["fabric_clock_mhz"]),
        ddr_bandwidth_gbps=float(data["ddr_bandwidth_gbps"]),
        ddr_read_latency_ns=float(data["ddr_read_latency_ns"]), power_rails=tuple(data["power_rails"]),
        static_power_w=float(data["static_power_w"]), accel=accel, path=path,
    )


def board_names() -> list[str]:
    """Names of the shipped boards."""
    return sorted(p.stem for p in BOARD_DIR.glob("*.json"))


def load_board(name: str) -> Board:
    """The shipped board of that name, or a board file when ``name`` ends in ``.json``; an unknown name
    lists the known ones."""
    if name.endswith(".json"):
        return load_board_file(name)
    path = BOARD_DIR / f"{name}.json"
    if not path.exists():
        raise BoardError(f"unknown board '{name}': known boards are {', '.join(board_names())}")
    return load_board_file(path)
