"""Vitrine: text-to-multimodal product search (three towers, FAISS, Ray, MLflow)."""

__version__ = "0.1.0"
