"""shiftpu.hw: see README.md for what this part of the toolkit does."""

if __name__ != "shiftpu.hw":  # the folder is only importable as part of the one package
    raise ImportError("'hw' is part of shiftpu: import shiftpu.hw instead")
