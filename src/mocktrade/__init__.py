"""mocktrade: a mock stock-trading and portfolio-tracking platform."""

__version__ = "0.1.0"
