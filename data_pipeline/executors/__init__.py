"""Executors turn (steps, input shards) into tasks: local processes here; Ray/Slurm share the task and marker format in base.py."""
