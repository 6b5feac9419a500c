"""Shipped alpha factors: one module per factor, each exporting CALCULATOR_INSTANCE (see README.md)."""
