"""Training: config, engine, checkpoints, DDP helpers; CLI: train_seednet_fastflow.py."""
