"""Helpers behind the command-line tools (plots, checkpoint inspection, memory planning)."""
