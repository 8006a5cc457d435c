"""One module per Ray job (pretrain, embed_index, serve, demo): each has ``run(cfg)`` and ``main()``."""
