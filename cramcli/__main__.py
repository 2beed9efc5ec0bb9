"""`python -m cramcli ...` (what `torchrun -m cramcli pretrain ...` runs)."""

from cramcli.cli import main

main()
