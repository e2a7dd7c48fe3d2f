"""Fixtures of the bad-input corpus (defined in ``corpus.py`` beside this file)."""

from __future__ import annotations

from corpus import inputs, refused

__all__ = ["inputs", "refused"]
