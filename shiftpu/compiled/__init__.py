"""The compiled model as the compiler writes it and the runtime runs it, importable by both.

``folder``: the compiled folder's format (docs/compiled-format.md), written by the compiler and read back with
checks by the runtime. ``cpu_regions``: the CPU side of a model, one onnxruntime session per region, with the
settings the compiler checks each region against. ``cpu_ops``: the numpy CPU-operator registry, the fallback
where onnxruntime is not installed, which the partition report names for each CPU node. ``cpu_timing``: the CPU
regions' and nodes' time, measured on this host. ``pipeline_stages``: the frame pipeline's stages of a compiled model
and the throughput model over their times.
"""
