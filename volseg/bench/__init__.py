"""Benchmarks that ship with the package (``volseg bench ...``)."""
