"""unbroken: a Python application server whose reloads never break a request."""

__version__ = "0.1.0"
__all__ = ["__version__"]
