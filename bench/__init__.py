"""Benchmarks that print figures (docs/DESIGN.md §2); never run by the test suite except as a smoke check."""
