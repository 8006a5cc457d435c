"""Pre-training throughput benchmark: Ray Data + Ray Train vs a plain in-process loop."""
