"""Serving benchmarks: HTTP vs in-process search latency and throughput."""
