"""The model layer's input error: plain `ValueError`s, told apart so the stages can turn them into one line."""

from __future__ import annotations


class CheckpointError(ValueError):
    """A checkpoint or tokenizer folder cram cannot load; the message names the file and the fix."""
