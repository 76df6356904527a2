"""The package's version (read by ``altmodal.__version__`` and written into every model card)."""

__version__ = "0.1.0"
