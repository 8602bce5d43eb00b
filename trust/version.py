"""The version, in a leaf so that any room can name itself without importing the package."""

__all__ = ["__version__"]

__version__ = "0.1.0"
