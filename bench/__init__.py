"""Benchmarks that print figures (DESIGN §2); never run by the test suite except as a smoke check."""
