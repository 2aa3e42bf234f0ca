"""The `shiftpu` command line."""
