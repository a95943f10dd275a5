"""`python -m broker.cli` is `mrb`."""

from broker.cli.entry import main

main()
