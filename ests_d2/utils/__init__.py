"""Helpers behind the command-line tools (error reporting, plots, checkpoint inspection, memory planning)."""
