"""`shiftpu isa` and `shiftpu regs`: print the contract tables."""

from __future__ import annotations

import typer

from shiftpu.cli.main import app


@app.command()
def isa() -> None:
    """Print the instruction and program-header layouts (markdown)."""
    from shiftpu.arch.isa import HEADER_LAYOUT, INSTRUCTION_LAYOUT, ISA_VERSION

    typer.echo(f"ISA version {ISA_VERSION}\n\nProgram header\n\n{HEADER_LAYOUT.markdown_table()}\n")
    typer.echo(f"Instruction\n\n{INSTRUCTION_LAYOUT.markdown_table()}")


@app.command()
def regs() -> None:
    """Print the AXI4-Lite register map (markdown)."""
    from shiftpu.arch.regmap import markdown_table

    typer.echo(markdown_table())
