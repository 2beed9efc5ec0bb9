"""Shared helpers of the pretrain tests: a tiny prepared-data folder with a learnable synthetic corpus."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from cramcli.data.checksum import shard_checksum

SPECIALS = ["<pad>", "<s>", "</s>", "<unk>", "<cls>", "<sep>", "<mask>"]
VOCAB = 64
SEQ = 32


def write_prepared(folder: Path, rows: int = 256, seed: int = 0, heldout: int = 0) -> Path:
    """Each row repeats one random word and ends in <sep>: a masked token is the word every other position
    holds (a task a tiny model learns in a few dozen steps), so the MLM loss falls far below log(vocab).
    `heldout` > 0 adds a held-out split of that many such rows (drawn after the training rows)."""
    from tokenizers import Tokenizer
    from tokenizers.models import WordLevel
    from tokenizers.pre_tokenizers import WhitespaceSplit
    from tokenizers.processors import TemplateProcessing

    folder.mkdir(parents=True, exist_ok=True)
    vocab = {tok: i for i, tok in enumerate(SPECIALS)} | {f"w{i}": i for i in range(len(SPECIALS), VOCAB)}
    tok = Tokenizer(WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = WhitespaceSplit()
    tok.add_special_tokens(SPECIALS)
    # The pretraining template, so GLUE can encode sentence pairs with this tokenizer.
    tok.post_processor = TemplateProcessing(single="<cls> $A <sep>", pair="<cls> $A <sep> $B:1 <sep>:1",
                                            special_tokens=[("<cls>", 4), ("<sep>", 5)])
    tok.save(str(folder / "tokenizer.json"))
    rng = np.random.default_rng(seed)
    words = VOCAB - len(SPECIALS)
    data = np.repeat(rng.integers(0, words, size=(rows + heldout, 1)) + len(SPECIALS), SEQ, axis=1)
    data[:, -1] = 5
    data[:rows].astype(np.uint16).tofile(folder / "tokens_00000.bin")
    checksum = shard_checksum(folder / "tokens_00000.bin")
    record = None
    if heldout:
        data[rows:].astype(np.uint16).tofile(folder / "heldout_00000.bin")
        record = {"num_rows": heldout, "num_tokens": heldout * SEQ, "data_hash": "test", "origin": "documents",
                  "shards": [{"file": "heldout_00000.bin", "rows": heldout,
                              "checksum": shard_checksum(folder / "heldout_00000.bin")}]}
    manifest = {"format": "cram-prepared/1", "seq_length": SEQ, "vocab_size": VOCAB, "dtype": "uint16",
                "num_rows": rows, "shards": [{"file": "tokens_00000.bin", "rows": rows, "checksum": checksum}],
                "tokenizer": "tokenizer.json", "tokenizer_hash": "test",
                "content_hash": f"synthetic-{seed}-{rows}-{heldout}",
                "special_tokens": {t: i for i, t in enumerate(SPECIALS)}, "budget": {}, "heldout": record}
    (folder / "manifest.json").write_text(json.dumps(manifest))
    return folder


def write_budgets(folder: Path, **train_overrides: object) -> tuple[Path, Path]:
    """Tiny arch + train budget JSON files (fp32, no dropout effect: pretraining runs in eval mode)."""
    arch = {"layout": "v1", "num_layers": 2, "hidden_size": 32, "num_heads": 2, "intermediate_size": 64,
            "vocab_size": VOCAB, "max_seq_length": SEQ, "classifier": {"head_dim": 32}}
    train = {"hours": 1.0, "schedule": {"name": "budget-one-cycle"}, "batch_size": 16, "micro_batch_size": 8,
             "batch_ramp": 0, "precision": "fp32", "log_every_steps": 2, "checkpoint_every_minutes": 60,
             "optimizer": {"lr": 1e-2}} | train_overrides
    (folder / "arch.json").write_text(json.dumps(arch))
    (folder / "train.json").write_text(json.dumps(train))
    return folder / "train.json", folder / "arch.json"
