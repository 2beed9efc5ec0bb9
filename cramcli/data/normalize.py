"""The text normaliser, built once from the data budget and stored inside the tokenizer.

Preparation normalises documents with exactly this object before filtering and deduplication, and the saved
`tokenizer.json` carries it as its `normalizer`, so GLUE and inference see the same text transformation as
pretraining. Every step is idempotent, so the tokenizer re-normalising prepared text changes nothing.
"""

from __future__ import annotations

from tokenizers import Regex, normalizers

from cramcli.budgets import NormalizationBudget


def build_normalizer(budget: NormalizationBudget) -> normalizers.Normalizer:
    """The recipe's normaliser: `` and '' → ", NFD, lowercase, strip accents, delete non-ASCII, collapse spaces."""
    steps: list[normalizers.Normalizer] = []
    if budget.normalize_quotes:
        steps += [normalizers.Replace("``", '"'), normalizers.Replace("''", '"')]
    if budget.nfd:
        steps.append(normalizers.NFD())
    if budget.lowercase:
        steps.append(normalizers.Lowercase())
    if budget.strip_accents:
        # StripAccents removes combining marks, which only exist as separate characters after NFD.
        steps.append(normalizers.StripAccents())
    if budget.ascii_only:
        steps.append(normalizers.Replace(Regex(r"[^\x00-\x7F]+"), ""))
    if budget.collapse_whitespace:
        steps.append(normalizers.Replace(Regex(r" {2,}"), " "))
    return normalizers.Sequence(steps)
