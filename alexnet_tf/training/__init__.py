"""Training: configuration, the paper's SGD, schedules, distribution, checkpoints, the loop, evaluation."""
