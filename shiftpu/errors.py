"""The base of every error shiftpu reports to a user as one clear line (no traceback)."""


class ShiftpuError(Exception):
    """An error caused by the input or the environment, with a message that names the cause."""
