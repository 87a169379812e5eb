"""One training step and one run: the engine, the training loop, evaluation, step checkpoints
and anti-forgetting strategies. May import study, data, models and store."""
