"""shiftpu.sw: see README.md for what this part of the toolkit does."""

if __name__ != "shiftpu.sw":  # the folder is only importable as part of the one package
    raise ImportError("'sw' is part of shiftpu: import shiftpu.sw instead")
