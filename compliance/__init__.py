"""Privacy-preserving acceptable-use compliance monitor for corporate mail metadata."""

__version__ = "0.1.0"
