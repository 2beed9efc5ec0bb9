"""Talking to the Hugging Face hub for `cram push`: its client's exceptions, whose classes differ across
huggingface_hub versions (requests, httpx, httpx2), turned into one line each, never a traceback."""

from __future__ import annotations

import socket
from typing import Any

from cramcli.utils.errors import RunError, UsageError

LOGIN = "set HF_TOKEN to a token with write access (https://huggingface.co/settings/tokens) or run `hf auth login`"


class hub_errors:
    """Turn the hub client's exceptions inside the block into one line each: `UsageError` for the hub and the
    network, `RunError` for a local file (never reported as an unreachable hub)."""

    def __init__(self, repo_id: str, endpoint: str) -> None:
        self.repo_id, self.endpoint = repo_id, endpoint

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: Any, exc: BaseException | None, tb: Any) -> bool:
        if exc is None or not isinstance(exc, Exception) or isinstance(exc, UsageError):
            return False
        from huggingface_hub.errors import HfHubHTTPError

        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
        if isinstance(exc, HfHubHTTPError):
            status = getattr(getattr(exc, "response", None), "status_code", None)
            if status == 401:
                raise UsageError(f"the hub rejected the token (401 at {self.endpoint}); {LOGIN}") from None
            if status == 403:
                raise UsageError(f"--repo-id {self.repo_id}: the token may not write there (403); use a repo under "
                                 "your name or an organisation that granted you write access") from None
            raise UsageError(f"--repo-id {self.repo_id}: the hub refused ({status}: {first})") from None
        if _is_network_error(exc):
            raise UsageError(f"cannot reach the hub at {self.endpoint} ({type(exc).__name__}: {first}); check the "
                             "network connection (or HF_ENDPOINT), then push again") from None
        if isinstance(exc, OSError):  # a local file: unreadable, vanished, the client's cache on a full disk
            raise RunError(f"{exc.filename or 'a local file'}: {exc.strerror or first} — a local file problem, not "
                           "the hub; fix it and push again") from None
        return False


def _is_network_error(exc: BaseException) -> bool:
    """Connection, timeout and DNS errors of whichever HTTP library this huggingface_hub uses; never a local
    file's OSError."""
    if isinstance(exc, (ConnectionError, TimeoutError, socket.gaierror, socket.herror)):
        return True
    if isinstance(exc, OSError) and type(exc).__module__.split(".")[0] in ("requests", "urllib3"):
        return True  # requests' ConnectionError/Timeout are OSErrors (huggingface_hub < 1.0)
    classes: list[type] = []
    for module, names in (("httpx2", ("TransportError",)), ("httpx", ("TransportError",))):
        try:
            mod = __import__(module)
        except ImportError:
            continue
        classes += [getattr(mod, n) for n in names if isinstance(getattr(mod, n, None), type)]
    return isinstance(exc, tuple(classes))
