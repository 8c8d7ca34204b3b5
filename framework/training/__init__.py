"""Training: the DeepSpeed engine wrapper, the loop, LR schedules, metrics and stability guards."""
