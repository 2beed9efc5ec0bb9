"""The model layer's errors: plain `ValueError`/`RuntimeError` subclasses, told apart so that the stages and the
CLI can turn the ones caused by the user's input into one-line messages (exit 2) instead of tracebacks."""

from __future__ import annotations


class CheckpointError(ValueError):
    """A checkpoint or tokenizer folder cram cannot load; the message names the file and the fix."""


class BackendUnavailable(RuntimeError):
    """The model's attention backend cannot run here (flash-attn on a CPU, in fp32, or not installed)."""


INPUT_ERRORS = (CheckpointError, BackendUnavailable)
