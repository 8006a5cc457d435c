"""Catalog contract, validation, importers, image decoding and derived query logs."""
