"""A tokenizer whose special tokens sit at non-default ids, as an original tokenizer's may (hash-seeded set order),
and here even after the ordinary words, so nothing may assume that ids 0..6 are special."""

from __future__ import annotations

from pathlib import Path

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors

from cramcli.budgets import NormalizationBudget
from cramcli.data.normalize import build_normalizer

WORDS = ["the", "a", "cat", "dog", "sat", "ran", "on", "mat", "fast", "slow", "big", "small", "red", "blue", "is",
         "was", "not", "and", "bird", "tree", "sun", "saw", "near", "old", "."]
PERMUTED = ["<mask>", "<sep>", "</s>", "<pad>", "<cls>", "<unk>", "<s>"]
"""Special tokens in id order, placed after the words."""
IDS = {token: len(WORDS) + i for i, token in enumerate(PERMUTED)}
VOCAB = len(WORDS) + len(PERMUTED)


def permuted_tokenizer(path: Path) -> Path:
    """A WordPiece tokenizer.json with cram's normaliser and the recipe's templates, at the ids in `IDS`."""
    vocab = {w: i for i, w in enumerate(WORDS)} | IDS
    tok = Tokenizer(models.WordPiece(vocab=vocab, unk_token="<unk>", continuing_subword_prefix="##"))
    tok.normalizer = build_normalizer(NormalizationBudget())
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.decoder = decoders.WordPiece(prefix="##")
    tok.add_special_tokens(PERMUTED)
    tok.post_processor = processors.TemplateProcessing(
        single="$A <sep>", pair="<cls> $A <sep> $B:0 <sep>:0",
        special_tokens=[("<cls>", IDS["<cls>"]), ("<sep>", IDS["<sep>"])])
    assert [tok.token_to_id(t) for t in PERMUTED] == [IDS[t] for t in PERMUTED]
    path.parent.mkdir(parents=True, exist_ok=True)
    tok.save(str(path))
    return path
