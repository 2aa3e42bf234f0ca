"""Shift quantization: PyTorch QAT layers, export and post-training quantization to the QDQ ONNX form.

The form written here is specified in docs/quantized-onnx.md; the numbers follow shiftpu.arch.numerics.
PyTorch is imported only by the QAT modules (``qat``, ``prepare``, ``export``).
"""
