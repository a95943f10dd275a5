"""Synthetic multi-hospital demo data published by `mrb demo`."""
