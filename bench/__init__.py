"""Benchmarks of the shiftpu toolkit (`make bench`, i.e. `python -m bench.run`)."""
