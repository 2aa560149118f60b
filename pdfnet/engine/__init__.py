"""Training, checkpointing and inference engines."""
