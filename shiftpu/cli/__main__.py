"""`python -m shiftpu.cli`: the `shiftpu` command."""

from shiftpu.cli.main import main

main()
