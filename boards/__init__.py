"""Boards as data: one JSON file per board in this folder; adding a board is adding a file.

``load_board(name)`` returns a typed :class:`Board`; a malformed file raises BoardError naming the file
and the field.
"""

if __name__ != "shiftpu.boards":  # the folder is only importable as part of the one package
    raise ImportError("'boards' is part of shiftpu: import shiftpu.boards instead")

from shiftpu.boards.board import (  # noqa: E402
    DEFAULT_BOARD,
    Board,
    BoardError,
    PsFamily,
    YosysFamily,
    board_names,
    load_board,
    load_board_file,
)

__all__ = ["DEFAULT_BOARD", "Board", "BoardError", "PsFamily", "YosysFamily", "board_names", "load_board",
           "load_board_file"]
