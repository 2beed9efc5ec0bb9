"""The errno behind a Rust-backed writer's failure, in the wordings the supported library versions use."""

from __future__ import annotations

import errno

import pytest

from cramcli.utils.disk import as_os_error, os_errors


@pytest.mark.parametrize("text", [
    "Error while serializing: I/O error: File too large (os error 27)",  # safetensors >= 0.5, tokenizers
    'Error while serializing: IoError(Os { code: 27, kind: FileTooLarge, message: "File too large" })',  # 0.4
])
def test_the_errno_is_read_from_either_wording(text: str) -> None:
    exc = as_os_error(RuntimeError(text), "model.safetensors")
    assert exc is not None and exc.errno == errno.EFBIG and exc.filename == "model.safetensors"


def test_an_error_without_an_errno_passes_through() -> None:
    assert as_os_error(RuntimeError("shape mismatch"), "x") is None
    with pytest.raises(RuntimeError, match="shape mismatch"), os_errors("x"):
        raise RuntimeError("shape mismatch")
    with pytest.raises(OSError) as caught, os_errors("w.bin"):
        raise RuntimeError("IoError(Os { code: 28, kind: StorageFull, message: \"No space left on device\" })")
    assert caught.value.errno == errno.ENOSPC and caught.value.filename == "w.bin"
