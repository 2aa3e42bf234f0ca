"""Example trainings: shift QAT/PTQ on real digits, and the shapes detector shipped as the demo model."""
