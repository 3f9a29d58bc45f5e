"""Training: clip shards -> recognition models on Ray Train, with checkpoints and resume."""
