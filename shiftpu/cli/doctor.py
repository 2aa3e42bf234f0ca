"""`shiftpu doctor`: is every tool the flow needs installed and working?"""

from __future__ import annotations

import typer
from rich.console import Console
from rich.table import Table

from shiftpu.cli.main import app


@app.command()
def doctor() -> None:
    """Check each tool (Verilator, Yosys, Python packages): version and whether it works. Exit 1 if any is broken."""
    from shiftpu import toolchain as tc

    checks = [
        tc.check_verilator(),
        tc.check_yosys(),
        tc.check_python_package("amaranth"),
        tc.check_python_package("cocotb"),
        tc.check_python_package("cocotbext.axi", "cocotbext-axi"),
        tc.check_python_package("onnx"),
        tc.check_python_package("onnxruntime"),
        tc.check_python_package("torch"),
        tc.check_python_package("pynq"),
    ]
    table = Table(title="shiftpu doctor")
    for col in ("tool", "version", "status", "detail"):
        table.add_column(col)
    for c in checks:
        table.add_row(c.name, c.version.splitlines()[0] if c.version else "-",
                      "[green]ok[/green]" if c.ok else "[red]BROKEN[/red]", c.detail)
    Console().print(table)
    bad = [c.name for c in checks if not c.ok]
    if bad:
        typer.secho(f"missing or broken: {', '.join(bad)}", fg="red", err=True)
        raise typer.Exit(1)
