"""Researchers' factor calculators, their discovery, the alpha engine and sizing into target positions."""
