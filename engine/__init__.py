"""chanload's load engine: configuration, client, executors, metrics and reports."""

from common import __version__

__all__ = ["__version__"]
