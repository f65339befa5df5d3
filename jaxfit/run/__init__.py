"""Runs: the CLI config, one input fitted and written, datasets (local engine or Ray), the summary."""
