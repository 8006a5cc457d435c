"""FAISS index benchmarks on real product vectors and a 1M synthetic set."""
