"""Encoders, Modal Adaptation, the MAKE model and its on-disk format (nn.Modules only; no Ray, no MLflow)."""
