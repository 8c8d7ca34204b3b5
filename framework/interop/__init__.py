"""Hugging Face interop: export, import, LoRA fine-tuning, parity checks."""
