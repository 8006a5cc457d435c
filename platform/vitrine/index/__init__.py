"""Catalog embedding (Ray Data) and FAISS index building, saving and loading."""
