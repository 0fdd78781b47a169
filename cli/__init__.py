"""Thin typer front ends: collect options, call one library function, map errors to exit codes."""
