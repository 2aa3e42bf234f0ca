"""`shiftpu demo`: the whole flow on the shipped shape detector (what `make demo` runs)."""

from __future__ import annotations

from pathlib import Path

import typer

from shiftpu.boards import DEFAULT_BOARD
from shiftpu.cli.main import app


@app.command()
def demo(
    out: Path = typer.Option(Path("demo_out"), "--out", "-o",
                             help="Output folder (replaced if it holds an earlier demo's output, refused if it holds "
                                  "other files; nothing is left there if the demo fails)."),
    board: str = typer.Option(DEFAULT_BOARD, "--board", "-b", metavar="<board>", help="Board to compile for."),
    images: int = typer.Option(64, "--images", "-n", help="Generated test images to run."),
    rtl_frames: int = typer.Option(1, "--rtl-frames",
                                   help="Frames to run on the RTL simulation (0: none; needs the hw extra)."),
    build_dir: Path = typer.Option(None, "--build-dir",
                                   help="Where the RTL build is cached (default: the user's cache directory)."),
) -> None:
    """Check and compile the shipped detector, run the generated test images on the golden model (bit-exact against
    onnxruntime, mAP), frames on the RTL simulation, model fps and power on every board, and write detections, drawn
    images and an HTML report (with the report extra). Runs from an installed package in any folder."""
    from shiftpu.demo import demo as run

    run(out, board, images, rtl_frames, build_dir)
