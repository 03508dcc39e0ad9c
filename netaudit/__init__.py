"""netaudit: audit your network from your own mail and calendar, on your own machine."""

__version__ = "0.1.0"
