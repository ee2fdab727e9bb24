"""fanout: a Server-Sent Events fan-out daemon."""

__version__ = "0.1.0"
