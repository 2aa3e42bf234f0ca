"""shiftpu.boards: see README.md for what this part of the toolkit does."""

if __name__ != "shiftpu.boards":  # the folder is only importable as part of the one package
    raise ImportError("'boards' is part of shiftpu: import shiftpu.boards instead")
