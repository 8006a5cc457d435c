"""Embedding throughput benchmark: the index job's Ray Data path vs a plain in-process loop."""
