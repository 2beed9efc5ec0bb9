"""Special-token ids come from the tokenizer: `special_ids`, the config check, masking and GLUE padding with
ids wherever a tokenizer put them (cram's own keep 0..6)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
from tokenizers import Tokenizer, models

from cramcli.budgets import MaskingBudget
from cramcli.data.tokenizer import (
    CRAM_SPECIAL_IDS,
    SPECIAL_IDS,
    check_config_ids,
    load_tokenizer,
    special_ids,
    to_hf_tokenizer,
)
from cramcli.train.step import mask_batch
from cramcli.utils.errors import UsageError

sys.path.insert(0, str(Path(__file__).parent))
from special_tokens_helpers import IDS, VOCAB, permuted_tokenizer  # noqa: E402

FIXTURE = Path(__file__).resolve().parents[2] / "shared/fixtures/cramming/v2-local-run-tiny/checkpoints"


def test_cram_ids_are_the_documented_fixed_ones() -> None:
    assert (CRAM_SPECIAL_IDS.pad, CRAM_SPECIAL_IDS.unk, CRAM_SPECIAL_IDS.cls, CRAM_SPECIAL_IDS.sep,
            CRAM_SPECIAL_IDS.mask) == (0, 3, 4, 5, 6)
    assert CRAM_SPECIAL_IDS.all == tuple(range(7)) and CRAM_SPECIAL_IDS.tokens == SPECIAL_IDS


def test_permuted_tokenizer_ids_are_read(tmp_path: Path) -> None:
    path = permuted_tokenizer(tmp_path / "tokenizer.json")
    ids = special_ids(path)
    assert (ids.pad, ids.cls, ids.sep, ids.mask, ids.unk) == (IDS["<pad>"], IDS["<cls>"], IDS["<sep>"],
                                                             IDS["<mask>"], IDS["<unk>"])
    assert ids.all == tuple(sorted(IDS.values())) and ids.tokens == IDS
    assert special_ids(tmp_path) == ids  # a folder holding tokenizer.json
    assert ids.config_fields() == {"pad_token_id": IDS["<pad>"], "cls_token_id": IDS["<cls>"],
                                   "sep_token_id": IDS["<sep>"], "mask_token_id": IDS["<mask>"]}
    assert load_tokenizer(path).get_vocab_size() == VOCAB  # no longer refused for not being cram's layout
    hf = to_hf_tokenizer(path)
    assert (hf.pad_token_id, hf.mask_token_id, hf.cls_token_id) == (IDS["<pad>"], IDS["<mask>"], IDS["<cls>"])


@pytest.mark.skipif(not FIXTURE.is_dir(), reason="../shared fixtures absent")
def test_the_original_run_tokenizer_has_pad_6() -> None:
    ids = special_ids(next(FIXTURE.iterdir()) / "tokenizer.json")
    assert (ids.pad, ids.unk, ids.cls, ids.sep, ids.mask) == (6, 3, 2, 1, 4)  # per the fixture's README


def test_missing_and_colliding_tokens_are_one_line_errors(tmp_path: Path) -> None:
    Tokenizer(models.WordLevel({"<unk>": 0, "<pad>": 1, "x": 2}, unk_token="<unk>")).save(str(tmp_path / "a.json"))
    with pytest.raises(UsageError, match=r"a\.json: special-token ids incomplete: no <cls>, <sep>, <mask> token"):
        special_ids(tmp_path / "a.json")
    vocab = {"<unk>": 0, "<pad>": 1, "<cls>": 2, "<sep>": 3, "<mask>": 4, "[PAD]": 5}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    assert special_ids(tok).pad == 1  # cram's names win over BERT's
    bert = Tokenizer(models.WordLevel({"[UNK]": 0, "[PAD]": 1, "[CLS]": 2, "[SEP]": 3, "[MASK]": 4}, unk_token="[UNK]"))
    assert (special_ids(bert).pad, special_ids(bert).mask) == (1, 4)
    with pytest.raises(UsageError, match="not a valid tokenizer.json"):
        (tmp_path / "b.json").write_text("{")
        special_ids(tmp_path / "b.json")


def test_config_that_disagrees_with_the_tokenizer_is_refused(tmp_path: Path) -> None:
    ids = special_ids(permuted_tokenizer(tmp_path / "tokenizer.json"))
    check_config_ids(ids, {"pad_token_id": IDS["<pad>"], "sep_token_id": None}, "config.json")  # None: not named
    with pytest.raises(UsageError, match=f"config.json: pad_token_id=0 where the tokenizer says {IDS['<pad>']}"):
        check_config_ids(ids, {"pad_token_id": 0}, "config.json")


@pytest.mark.parametrize("scheme", ["bernoulli", "exact"])
def test_masking_uses_the_tokenizers_mask_and_spares_its_specials(tmp_path: Path, scheme: str) -> None:
    ids = special_ids(permuted_tokenizer(tmp_path / "tokenizer.json"))
    g = torch.Generator().manual_seed(0)
    rows = torch.randint(0, VOCAB - 7, (64, 32), generator=g)  # ordinary words only ...
    rows[:, -1] = ids.sep  # ... and a <sep> per row, at its id after the words
    rows[:, 0] = 3  # id 3 is an ordinary word here (cram's <unk>): it must be maskable
    masking = MaskingBudget(scheme=scheme, rate=0.25 if scheme == "exact" else 0.3)
    inputs, labels = mask_batch(rows, masking, VOCAB, g, special=ids)
    selected = labels != -100
    assert (inputs[selected] == ids.mask).float().mean() > 0.7  # <mask> is the tokenizer's, not cram's 6
    if scheme == "bernoulli":  # v1 never selects a special token; id 3 is not one here
        assert not selected[:, -1].any() and selected[:, 0].any()
