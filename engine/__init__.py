"""chanload's load engine: configuration, client, executors, metrics and reports."""

__version__ = "0.1.0"
