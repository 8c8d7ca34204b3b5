"""Evaluation: loss and perplexity of checkpoints and exported models, and sampling (generate.py);
all read the layout-free consolidated weights, so any checkpoint layout works."""
