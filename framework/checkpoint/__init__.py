"""Checkpoints: atomic DeepSpeed engine checkpoints plus Anvil metadata and a layout-free weight file."""
