"""mrb: cross-hospital test-result mutual-recognition broker."""
