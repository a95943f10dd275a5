"""Domain model and rules: standard library only, no I/O."""
