"""Evaluation: loss and perplexity of checkpoints and exported models."""
