"""shiftpu.sim: see README.md for what this part of the toolkit does."""

if __name__ != "shiftpu.sim":  # the folder is only importable as part of the one package
    raise ImportError("'sim' is part of shiftpu: import shiftpu.sim instead")
