"""AccelConfig: the one description of an accelerator instance.

The hardware generator elaborates it, the compiler tiles for it, the golden model and performance
model execute against it, and the runtime checks it: its :meth:`AccelConfig.config_hash` is built
into a read-only register of the accelerator and into every compiled program.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any

from shiftpu.arch.numerics import WeightCode
from shiftpu.errors import ShiftpuError


class ConfigError(ShiftpuError, ValueError):
    """An AccelConfig is inconsistent or cannot be built."""


#: Fields added to the config after its first version, with the value that builds the hardware of before: at
#: that value a field stays out of the canonical JSON, so configs that do not use it keep their hash (and every
#: bitstream and compiled folder built under it stays valid).
HASH_NEUTRAL_VALUES: dict[str, Any] = {"pe_ic": 1, "dsp_lanes": 0}


@dataclass(frozen=True)
class AccelConfig:
    """Parameters of one accelerator instance (all sizes in elements unless the name says bytes)."""

    #: PE array rows: output channels computed in parallel (all dataflows).
    pe_oc: int = 8
    #: PE array columns: adjacent output pixels (pixel-parallel), input channels reduced by an adder
    #: tree (input-channel-parallel) or pixels of one channel per row (depthwise).
    pe_px: int = 8
    #: Input-channel lanes of each PE: in the PIXEL dataflow a PE sums the products of ``pe_ic`` adjacent input
    #: channels per cycle (1, or a power of two up to the channel block).
    pe_ic: int = 1
    #: Lanes of each PE whose product is a DSP slice's multiplier (the weight's value times the activation),
    #: added to a shifting lane's term in the slice's post-adder; the other lanes shift in LUTs. At most
    #: pe_ic / 2. The same numbers either way: it trades LUTs for DSP slices.
    dsp_lanes: int = 0
    #: Activation width in bits (8, or 4 for the narrow option; stored one per byte in DDR).
    act_bits: int = 8
    #: Weight coding: one-term 4-bit shift codes or two-term 8-bit codes.
    weight_code: WeightCode = WeightCode.SHIFT4
    #: Accumulator width in bits; the compiler refuses layers that could overflow it.
    acc_bits: int = 32
    #: Widest output strip (columns) the line buffer and accumulators hold.
    strip_width: int = 32
    #: Largest kernel height/width.
    max_kernel: int = 7
    #: Input line buffer capacity in bytes (K rows x strip input width x channel tile).
    line_buffer_bytes: int = 32 * 1024
    #: Weight buffer capacity in bytes (one output-channel tile x input-channel tile x K x K codes).
    weight_buffer_bytes: int = 16 * 1024
    #: Accumulator buffer capacity in accumulators (output-channel tile x strip width rounded up to pe_px).
    acc_buffer_words: int = 2048
    #: Data width of the AXI4 master (the Zynq HP port) in bits.
    axi_data_bits: int = 64
    #: Address width of the AXI4 master in bits.
    axi_addr_bits: int = 32
    #: Longest AXI4 burst in beats.
    max_burst_beats: int = 16
    #: Target fabric clock in MHz.
    clock_mhz: float = 150.0

    def __post_init__(self) -> None:
        object.__setattr__(self, "weight_code", WeightCode(self.weight_code))
        problems = []
        for name in ("pe_oc", "pe_px", "pe_ic"):
            v = getattr(self, name)
            if v < 1 or v & (v - 1):
                problems.append(f"{name}={v} must be a power of two >= 1")
        if self.pe_ic > self.axi_data_bits // 8:
            problems.append(f"pe_ic={self.pe_ic} exceeds the channel block ({self.axi_data_bits // 8} channels, one "
                            f"beat of the {self.axi_data_bits}-bit AXI port)")
        if self.dsp_lanes < 0 or self.dsp_lanes > self.pe_ic // 2:
            problems.append(f"dsp_lanes={self.dsp_lanes} must be 0..pe_ic/2 ({self.pe_ic // 2}): each DSP lane is "
                            f"paired with a shifting lane")
        if self.act_bits not in (4, 8):
            problems.append(f"act_bits={self.act_bits} must be 4 or 8")
        if self.acc_bits not in (24, 32, 48):
            problems.append(f"acc_bits={self.acc_bits} must be 24, 32 or 48")
        if self.axi_data_bits not in (32, 64, 128):
            problems.append(f"axi_data_bits={self.axi_data_bits} must be 32, 64 or 128")
        if self.axi_addr_bits not in (32, 40, 49):
            problems.append(f"axi_addr_bits={self.axi_addr_bits} must be 32, 40 or 49")
        if not 1 <= self.max_kernel <= 7:
            problems.append(f"max_kernel={self.max_kernel} must be 1..7")
        if self.strip_width < self.pe_px or self.strip_width % self.pe_px:
            problems.append(f"strip_width={self.strip_width} must be a multiple of pe_px={self.pe_px}")
        if self.max_burst_beats not in (1, 2, 4, 8, 16, 32, 64, 128, 256):
            problems.append(f"max_burst_beats={self.max_burst_beats} must be a power of two <= 256")
        if self.clock_mhz <= 0:
            problems.append(f"clock_mhz={self.clock_mhz} must be positive")
        if self.acc_buffer_words < self.strip_width * self.pe_oc:
            problems.append(
                f"acc_buffer_words={self.acc_buffer_words} must hold one strip x pe_oc "
                f"({self.strip_width * self.pe_oc})"
            )
        if problems:
            raise ConfigError("invalid AccelConfig: " + "; ".join(problems))

    # -- derived quantities -------------------------------------------------------------------

    @property
    def axi_bytes(self) -> int:
        """Bytes per AXI beat."""
        return self.axi_data_bits // 8

    @property
    def channel_block(self) -> int:
        """Channels stored together per pixel in DDR (one AXI beat of int8 activations)."""
        return self.axi_bytes

    @property
    def array_shape(self) -> str:
        """The PE array as people write it: pe_oc x pe_px, times pe_ic where a PE has lanes ("8x4x16")."""
        return f"{self.pe_oc}x{self.pe_px}" + (f"x{self.pe_ic}" if self.pe_ic > 1 else "")

    @property
    def macs_per_cycle(self) -> int:
        """Peak shift-add operations per cycle of the PE array (the PIXEL dataflow with all its lanes)."""
        return self.pe_oc * self.pe_px * self.pe_ic

    # -- identity -----------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["weight_code"] = self.weight_code.name
        return d

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = "config") -> AccelConfig:
        """Build from a dict (e.g. parsed JSON); unknown or mistyped fields raise ConfigError."""
        known = {f.name: f for f in fields(cls)}
        unknown = sorted(set(data) - set(known))
        if unknown:
            raise ConfigError(f"{source}: unknown AccelConfig field(s): {', '.join(unknown)}")
        kwargs: dict[str, Any] = {}
        for key, value in data.items():
            if key == "weight_code":
                try:
                    kwargs[key] = WeightCode[value] if isinstance(value, str) else WeightCode(value)
                except (KeyError, ValueError):
                    names = ", ".join(w.name for w in WeightCode)
                    raise ConfigError(f"{source}: weight_code={value!r} is not one of {names}") from None
            elif key == "clock_mhz":
                if not isinstance(value, (int, float)) or isinstance(value, bool):
                    raise ConfigError(f"{source}: clock_mhz must be a number, got {value!r}")
                kwargs[key] = float(value)
            else:
                if not isinstance(value, int) or isinstance(value, bool):
                    raise ConfigError(f"{source}: {key} must be an integer, got {value!r}")
                kwargs[key] = value
        try:
            return cls(**kwargs)
        except ConfigError as e:
            raise ConfigError(f"{source}: {e}") from None

    @classmethod
    def load(cls, path: str | Path) -> AccelConfig:
        """Read a JSON config file."""
        path = Path(path)
        try:
            data = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as e:
            raise ConfigError(f"{path}: cannot read accelerator config: {e}") from None
        if not isinstance(data, dict):
            raise ConfigError(f"{path}: accelerator config must be a JSON object")
        return cls.from_dict(data, source=str(path))

    def canonical_json(self) -> str:
        """Field values as sorted, whitespace-free JSON: the input of the config hash."""
        d = self.to_dict()
        for name, value in HASH_NEUTRAL_VALUES.items():  # fields added later, at the value of the older hardware
            if d[name] == value:
                del d[name]
        d["clock_mhz"] = float(self.clock_mhz)  # equal configs hash alike, whether built with 200 or 200.0 MHz
        return json.dumps(d, sort_keys=True, separators=(",", ":"))

    def config_hash(self) -> int:
        """Stable 32-bit identity of the config (first 4 bytes of SHA-256 of the canonical JSON).

        Independent of Python version and field order; changes whenever any field changes.
        """
        return int.from_bytes(hashlib.sha256(self.canonical_json().encode()).digest()[:4], "big")

    def with_(self, **changes: Any) -> AccelConfig:
        """A copy with some fields changed (validated)."""
        return replace(self, **changes)
