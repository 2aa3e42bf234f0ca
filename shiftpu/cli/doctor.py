"""`shiftpu doctor`: is every tool the flow needs installed and working?

The core (what `pip install shiftpu` brings) must work; each extra is optional and enables part of the flow, so a
missing extra is reported with what it enables and how to install it, and does not fail the check. A tool that is
installed but broken does.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from shiftpu.cli.main import app

if TYPE_CHECKING:
    from shiftpu.toolchain import ToolStatus


@dataclass(frozen=True)
class Part:
    """The core or one extra of the package: what it enables and the checks of its tools."""

    name: str  #: "core", or the extra's name as in pyproject.toml
    enables: str
    checks: tuple[tuple[str, ...], ...]  #: per tool: ("verilator",) / ("yosys",) or (module, distribution)

    @property
    def optional(self) -> bool:
        return self.name != "core"

    @property
    def install(self) -> str:
        """How to add an extra to an installed shiftpu."""
        return f"pip install 'shiftpu[{self.name}]'"


PARTS = (
    Part("core", "compile, golden model, run, bench, estimate (required)",
         (("numpy",), ("onnx",), ("onnxruntime",), ("jinja2",), ("PIL", "pillow"), ("platformdirs",))),
    Part("hw", "RTL generation and simulation (run --backend rtl, rtl-check, the demo's RTL frames), "
               "build-hw and its Yosys estimates",
         (("verilator",), ("yosys",), ("amaranth",), ("cocotb",), ("cocotbext.axi", "cocotbext-axi"))),
    Part("quant", "quantization-aware training in PyTorch (shiftpu.compiler.quant, the example trainings)",
         (("torch",), ("sklearn", "scikit-learn"))),
    Part("board", "the board and pynq-sim backends (run/bench --backend board|pynq-sim)", (("pynq",),)),
    Part("report", "shiftpu report and the Gantt charts of bench --gantt", (("matplotlib",),)),
)


def _checker(check: tuple[str, ...]) -> Callable[[], ToolStatus]:
    from shiftpu import toolchain as tc

    if check == ("verilator",):
        return tc.check_verilator
    if check == ("yosys",):
        return tc.check_yosys
    return lambda: tc.check_python_package(*check)


@app.command()
def doctor() -> None:
    """Check each tool (Verilator, Yosys, Python packages): version and whether it works, grouped by the core and
    the optional extras (with what each enables). Exit 1 only if the core is missing or broken, or an installed
    tool is broken; a missing extra is reported as optional."""
    table = Table(title="shiftpu doctor")
    for col in ("part", "tool", "version", "status", "detail"):
        table.add_column(col)
    broken: list[str] = []
    missing: dict[Part, list[str]] = {}
    for part in PARTS:
        for check in part.checks:
            c = _checker(check)()
            if c.ok:
                status = "[green]ok[/green]"
            elif not c.installed and part.optional:
                status = "[yellow]optional, not installed[/yellow]"
                missing.setdefault(part, []).append(c.name)
            else:
                status = "[red]BROKEN[/red]" if c.installed else "[red]MISSING[/red]"
                broken.append(c.name)
            table.add_row(part.name, c.name, escape(c.version.splitlines()[0]) if c.version else "-", status,
                          escape(c.detail))
    console = Console()
    console.print(table)
    for part, names in missing.items():
        console.print(f"optional extra '{part.name}' not installed ({', '.join(names)}): it enables {part.enables}; "
                      f"{part.install}", markup=False, highlight=False, soft_wrap=True)
    if broken:
        typer.secho(f"missing or broken: {', '.join(broken)}", fg="red", err=True)
        raise typer.Exit(1)
    typer.echo("the core works" + (": every extra is installed and works" if not missing else ""))
