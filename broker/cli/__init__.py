"""The `mrb` command line."""
