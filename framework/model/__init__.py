"""The model: one readable decoder-only transformer (`transformer.py`) built from layer factories."""
