"""Benchmarks for sovra (run by hand or `make bench`, never in CI)."""
