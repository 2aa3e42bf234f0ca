"""Entry point of the `shiftpu` command: one Typer app, subcommands registered by their modules.

Errors derived from ShiftpuError are printed as one line naming the cause, with exit status 1.
``-h`` is ``--help`` on every command, and switches show no value placeholder in the help.
"""

from __future__ import annotations

import sys
from importlib import import_module
from typing import Any

import typer
from typer.core import TyperCommand, TyperGroup

from shiftpu import __version__
from shiftpu.errors import ShiftpuError


def _without_switch_metavars(params: list[Any]) -> list[Any]:
    """The parameters with an empty placeholder on every switch: typer's help shows ``<bool>`` after a flag
    such as ``--compare``, as if it took a value."""
    for param in params:
        if getattr(param, "is_flag", False) and param.metavar is None:
            param.metavar = ""
    return params


class ShiftpuCommand(TyperCommand):
    """A subcommand whose help lists switches without a value placeholder."""

    def get_params(self, ctx: Any) -> list[Any]:
        return _without_switch_metavars(super().get_params(ctx))


class ShiftpuGroup(TyperGroup):
    """The `shiftpu` command itself, its help written like its subcommands'."""

    def get_params(self, ctx: Any) -> list[Any]:
        return _without_switch_metavars(super().get_params(ctx))


class ShiftpuApp(typer.Typer):
    """The Typer app whose every subcommand is a :class:`ShiftpuCommand` unless it names another class."""

    def command(self, name: str | None = None, *, cls: type[TyperCommand] | None = None, **kwargs: Any) -> Any:
        return super().command(name, cls=cls or ShiftpuCommand, **kwargs)


app = ShiftpuApp(
    name="shiftpu",
    cls=ShiftpuGroup,
    context_settings={"help_option_names": ["-h", "--help"]},
    help="Shift-quantized CNNs on FPGA accelerators: quantize, compile, simulate, build, run, benchmark.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

#: Modules under shiftpu.cli that each add their subcommands to ``app``.
COMMAND_MODULES = ("doctor", "info", "boards", "quantize", "compile", "bench", "rtl", "report", "demo")


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
