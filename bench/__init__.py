"""Benchmarks that print figures as JSON (never timed asserts in tests)."""
