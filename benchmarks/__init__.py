"""Benchmarks: scripts that print measured figures (run all with `make bench`)."""
