"""The package's version, in a module of its own so that any layer can read it without
importing the package root (which is the public API, the top layer)."""

__version__ = "0.1.0"
