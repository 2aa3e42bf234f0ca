"""shiftpu.compiler: see README.md for what this part of the toolkit does."""

if __name__ != "shiftpu.compiler":  # the folder is only importable as part of the one package
    raise ImportError("'compiler' is part of shiftpu: import shiftpu.compiler instead")
