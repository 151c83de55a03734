"""warnshare: real-time missile-warning data sharing between national nodes through a fusing relay."""

__all__ = ["__version__"]
__version__ = "0.1.0"
