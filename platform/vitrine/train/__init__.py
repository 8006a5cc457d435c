"""Training: a Ray-free loop (``loop``) and the thin Ray Train shell around it (``ray_train``)."""
