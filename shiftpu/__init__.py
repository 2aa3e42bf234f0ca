"""shiftpu: shift-quantized CNNs on FPGA accelerators."""
__version__ = "0.1.0"
