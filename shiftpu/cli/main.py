"""Entry point of the `shiftpu` command: one Typer app, subcommands registered by their modules.

Errors derived from ShiftpuError are printed as one line naming the cause, with exit status 1.
"""

from __future__ import annotations

import sys
from importlib import import_module

import typer

from shiftpu import __version__
from shiftpu.errors import ShiftpuError

app = typer.Typer(
    name="shiftpu",
    help="Shift-quantized CNNs on FPGA accelerators: quantize, compile, simulate, build, run, benchmark.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

#: Modules under shiftpu.cli that each add their subcommands to ``app``.
COMMAND_MODULES = ("doctor", "info", "boards", "quantize", "compile", "bench", "rtl", "report")


def _version_callback(value: bool) -> None:
    if value:
        typer.echo(f"shiftpu {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", callback=_version_callback, is_eager=True,
                                 help="Print the version and exit."),
) -> None:
    """shiftpu: from a shift-quantized ONNX model to an FPGA accelerator, bit-exact at every step."""


for _name in COMMAND_MODULES:
    import_module(f"shiftpu.cli.{_name}")


def main() -> None:
    try:
        app()
    except ShiftpuError as e:
        typer.secho(f"error: {e}", fg="red", err=True)
        sys.exit(1)
    except KeyboardInterrupt:
        typer.secho("interrupted", fg="red", err=True)
        sys.exit(130)
