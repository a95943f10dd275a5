"""`python -m broker.cli` is `mrb`."""

from broker.cli.main import app

app()
