"""The WordPiece tokenizer: fixed special ids, the recipe's post-processor and normaliser, HF loading."""

from __future__ import annotations

import random

import pytest
from tokenizers import Tokenizer, models

from cramcli.budgets import NormalizationBudget, TokenizerBudget
from cramcli.data.tokenizer import (
    SPECIAL_TOKENS,
    canonicalize_ids,
    load_tokenizer,
    save_tokenizer,
    to_hf_tokenizer,
    tokenizer_hash,
    train_tokenizer,
)
from cramcli.utils.errors import UsageError

WORDS = ["river", "garden", "winter", "market", "history", "science", "village", "mountain", "station", "library", "animal", "season"]


def corpus(n: int = 300) -> list[str]:
    rng = random.Random(0)
    return [" ".join(rng.choice(WORDS) for _ in range(20)) + ". Caf\u00e9 ``quoted''." for _ in range(n)]


@pytest.fixture(scope="module")
def trained():
    return train_tokenizer(corpus(), TokenizerBudget(vocab_size=100), NormalizationBudget())


def test_special_tokens_have_fixed_ids(trained):
    assert SPECIAL_TOKENS == ["<pad>", "<s>", "</s>", "<unk>", "<cls>", "<sep>", "<mask>"]
    assert [trained.token_to_id(t) for t in SPECIAL_TOKENS] == list(range(7))
    assert trained.get_vocab_size() == 100


def test_post_processor_matches_the_recipe(trained):
    single = trained.encode("river garden")
    assert single.tokens == ["river", "garden", "<sep>"]
    pair = trained.encode("river", "garden")
    assert pair.tokens == ["<cls>", "river", "<sep>", "garden", "<sep>"]


def test_tokenizer_applies_the_budget_normalisation(trained):
    assert trained.normalizer.normalize_str("Caf\u00e9  ``RIVER''\u4f60") == 'cafe "river"'
    assert trained.encode("RIVER Garden").ids == trained.encode("river garden").ids


def test_ids_are_canonical_so_the_same_vocabulary_hashes_the_same(trained):
    # The trainer numbers its token set in hash-map order (and may even pick other rare subwords run to run,
    # huggingface/tokenizers#1794); any numbering of one set is renumbered to the same ids and hash.
    shuffled = Tokenizer.from_str(trained.to_str())
    tokens = list(trained.get_vocab())
    random.Random(0).shuffle(tokens)
    shuffled.model = models.WordPiece(vocab={t: i for i, t in enumerate(tokens)}, unk_token="<unk>",
                                      continuing_subword_prefix="##")
    assert shuffled.get_vocab() != trained.get_vocab()
    canonicalize_ids(shuffled)
    assert shuffled.get_vocab() == trained.get_vocab() and tokenizer_hash(shuffled) == tokenizer_hash(trained)
    rest = [t for t, _ in sorted(trained.get_vocab().items(), key=lambda kv: kv[1])][7:]
    assert rest == sorted(rest)


def test_saved_tokenizer_loads_in_transformers(trained, tmp_path):
    from transformers import AutoTokenizer, PreTrainedTokenizerFast

    save_tokenizer(trained, tmp_path)
    hf = to_hf_tokenizer(tmp_path)
    assert (hf.pad_token_id, hf.cls_token_id, hf.sep_token_id, hf.mask_token_id) == (0, 4, 5, 6)
    assert hf("River garden")["input_ids"] == trained.encode("river garden").ids
    plain = PreTrainedTokenizerFast(tokenizer_file=str(tmp_path / "tokenizer.json"))
    assert plain("river")["input_ids"] == trained.encode("river").ids
    auto = AutoTokenizer.from_pretrained(str(tmp_path))
    assert auto.mask_token == "<mask>" and auto("river", "garden")["input_ids"][0] == 4


def test_vocab_larger_than_the_corpus_supports_is_a_usage_error():
    with pytest.raises(UsageError, match="larger than .* supports"):
        train_tokenizer(corpus(5), TokenizerBudget(vocab_size=5000), NormalizationBudget())


def test_vocab_smaller_than_the_alphabet_is_a_usage_error():
    with pytest.raises(UsageError, match="smaller than .* characters alone make"):
        train_tokenizer(corpus(5), TokenizerBudget(vocab_size=100), NormalizationBudget(), vocab_size=20)


def test_load_tokenizer_rejects_bad_files_and_foreign_ids(tmp_path, trained):
    with pytest.raises(UsageError, match="cram train-tokenizer"):
        load_tokenizer(tmp_path / "nothing")
    (tmp_path / "tokenizer.json").write_text("{not json")
    with pytest.raises(UsageError, match="not a valid tokenizer.json"):
        load_tokenizer(tmp_path)
    from tokenizers import Tokenizer, models

    foreign = Tokenizer(models.WordLevel({"<unk>": 0, "<pad>": 1}, unk_token="<unk>"))
    foreign.save(str(tmp_path / "tokenizer.json"))
    with pytest.raises(UsageError, match="special-token ids"):
        load_tokenizer(tmp_path)


def test_train_tokenizer_command_writes_a_loadable_folder(tmp_path):
    from typer.testing import CliRunner

    from cramcli.cli import app

    (tmp_path / "raw").mkdir()
    (tmp_path / "raw" / "a.txt").write_text("\n\n".join(corpus(100)))
    runner = CliRunner()
    args = ["train-tokenizer", "--source", str(tmp_path / "raw"), "--vocab-size", "90", "--out", str(tmp_path / "t")]
    result = runner.invoke(app, [*args, "--json"])
    assert result.exit_code == 0, result.output
    assert "\"vocab_size\": 90" in result.stdout
    assert load_tokenizer(tmp_path / "t").get_vocab_size() == 90
    again = runner.invoke(app, args)
    assert again.exit_code == 2 and "--force" in again.output
    too_big = runner.invoke(app, [*args[:-2], "--out", str(tmp_path / "u"), "--vocab-size", "90000"])
    assert too_big.exit_code == 2 and "larger than" in too_big.output
    assert not (tmp_path / "u").exists()
