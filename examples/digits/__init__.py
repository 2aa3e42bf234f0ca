"""Shift QAT and PTQ of a small classifier on scikit-learn's real handwritten digits."""
