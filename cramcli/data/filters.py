"""Document filters: empty/short documents, and the recipe's compressibility ("trash") filter.

The original kept a raw document only if the `albert-base-v2` SentencePiece tokenizer made fewer than 0.25
tokens per character of it (tokens counted with ALBERT's two added special tokens), before normalisation and
before its own tokenizer was trained. `filter.tokenizer` in the data budget does exactly that with any
tokenizer (`hf:albert-base-v2`, or a local `tokenizer.json`): `raw_tokens` counts with its post-processor,
so ALBERT's `[CLS]`/`[SEP]` are included as they were.

Unset (the offline default, a documented deviation), the WordPiece tokenizer that cram trains on the same
corpus (or the one passed with `--tokenizer`) measures the normalised text instead: every document is
tokenized for packing anyway, so `tokens / characters` costs nothing extra. Junk (number lists, tables, code,
foreign-language residue) is rare, so its fragments do not earn vocabulary entries and it breaks into many
short pieces, while ordinary English words are mostly one token each. That ratio counts the document's tokens
without the `<sep>` the packer appends. See docs/data.md for measured ratios.
"""

from __future__ import annotations

import re
from pathlib import Path

from tokenizers import Tokenizer

from cramcli.budgets import FilterBudget
from cramcli.utils.errors import RunError, UsageError

_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")


def drop_reason(text: str, budget: FilterBudget) -> str | None:
    """Why a normalised document is dropped before dedup (`empty`, `too_short`), or None to keep it."""
    if not text.strip():
        return "empty"
    if budget.enabled and len(text) < budget.min_chars:
        return "too_short"
    return None


def compresses_badly(num_tokens: int, num_chars: int, budget: FilterBudget) -> bool:
    """The recipe's filter: drop unless tokens < max_tokens_per_char × characters."""
    return budget.enabled and num_tokens >= budget.max_tokens_per_char * num_chars


def load_filter_tokenizer(spec: str) -> Tokenizer:
    """`filter.tokenizer` → a tokenizer: a local `tokenizer.json` (or a folder holding one), else a hub id
    (`hf:NAME` or a bare `NAME` that is no local path) whose `tokenizer.json` is downloaded once."""
    name = spec.removeprefix("hf:")
    path = Path(spec).expanduser()
    if not spec.startswith("hf:") and (path.exists() or spec.endswith(".json") or not _HUB_ID.match(spec)):
        file = path / "tokenizer.json" if path.is_dir() else path
        if not file.is_file():
            raise UsageError(f"filter.tokenizer {spec}: no such tokenizer.json; give an existing file or folder,"
                             " or a hub id such as hf:albert-base-v2")
        return _from_file(file, spec)
    try:
        from huggingface_hub import hf_hub_download
        from huggingface_hub.utils import logging as hub_logging

        hub_logging.set_verbosity_error()
        file = Path(hf_hub_download(name, "tokenizer.json"))
    except Exception as exc:  # offline, unknown repo, no tokenizer.json: many exception types
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
        raise RunError(f"filter.tokenizer {spec}: cannot fetch tokenizer.json from the HF hub ({first}); pass a"
                       " local tokenizer.json path instead, or unset filter.tokenizer to filter with cram's own") from None
    return _from_file(file, spec)


def _from_file(file: Path, spec: str) -> Tokenizer:
    try:
        return Tokenizer.from_file(str(file))
    except Exception as exc:  # the Rust loader raises plain Exceptions with a serde message
        raise UsageError(f"filter.tokenizer {spec}: {file} is not a valid tokenizer.json"
                         f" ({str(exc).splitlines()[0]})") from None


def raw_tokens(tokenizer: Tokenizer, texts: list[str]) -> list[int]:
    """Tokens per raw document under the filter tokenizer, its added special tokens included."""
    return [len(enc.ids) for enc in tokenizer.encode_batch(texts)]
