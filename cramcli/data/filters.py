"""Document filters: empty/short documents, and the recipe's compressibility ("trash") filter.

The original kept a raw document only if a downloaded ALBERT SentencePiece tokenizer produced fewer than
0.25 tokens per character. We cannot download ALBERT, so the offline equivalent uses the WordPiece tokenizer
that cram trains on the same corpus (or the one passed with `--tokenizer`): every document is tokenized for
packing anyway, so `tokens / characters` of the normalised text costs nothing extra. Junk (number lists,
tables, code, foreign-language residue) is rare, so its fragments do not earn vocabulary entries and it breaks
into many short pieces, while ordinary English words are mostly one token each. The ratio counts the
document's tokens without the `<sep>` the packer appends. See docs/data.md for measured ratios.
"""

from __future__ import annotations

from cramcli.budgets import FilterBudget


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
