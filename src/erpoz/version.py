"""The version of erpoz (the root package exports it as ``erpoz.__version__``)."""

__version__ = "0.1.0"
