"""Tiny tokenizers and cram checkpoints built in a test: no network, no hub."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors, trainers

from cramcli.budgets import ArchBudget
from cramcli.model import CrammedBertConfig, CrammedBertForMaskedLM
from cramcli.model.checkpoint import save_checkpoint

TEXT = ["the cat sat on the mat .", "a dog ran in the park .", "the sun is hot and the sky is blue .",
        "paris is the capital of france .", "we read a book in the park ."] * 4
# Special tokens in the order an original cramming tokenizer can have them (hash-seeded set order): <pad>=6.
ORIGINAL_ORDER = ["<s>", "<sep>", "<cls>", "<unk>", "<mask>", "</s>", "<pad>"]
NAMES = {"pad_token": "<pad>", "cls_token": "<cls>", "sep_token": "<sep>", "mask_token": "<mask>",
         "unk_token": "<unk>", "bos_token": "<s>", "eos_token": "</s>"}


def write_tokenizer(folder: Path, order: list[str] = ORIGINAL_ORDER, vocab_size: int = 96,
                    model_max_length: int = 512) -> Path:
    """A WordPiece tokenizer with the special tokens at the ids `order` gives them, as `save_pretrained` writes
    it (tokenizer.json + tokenizer_config.json); singles encode `A <sep>`, pairs `<cls> A <sep> B <sep>`."""
    tok = Tokenizer(models.WordPiece(unk_token="<unk>"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.train_from_iterator(TEXT, trainers.WordPieceTrainer(vocab_size=vocab_size, special_tokens=order))
    ids = {t: tok.token_to_id(t) for t in ("<cls>", "<sep>")}
    tok.post_processor = processors.TemplateProcessing(
        single="$A <sep>", pair="<cls> $A <sep> $B <sep>", special_tokens=list(ids.items()))
    folder.mkdir(parents=True, exist_ok=True)
    tok.save(str(folder / "tokenizer.json"))
    (folder / "tokenizer_config.json").write_text(json.dumps(
        {"tokenizer_class": "PreTrainedTokenizerFast", "model_max_length": model_max_length, **NAMES}))
    return folder / "tokenizer.json"


# The arch budget's modern options, all on (zero-initialised projections aside: they would hide attention).
MODERN_ARCH = {"position_embedding": "rotary", "qk_norm": "rms", "activation": "relu2", "glu": False,
               "tie_decoder": False}


def tiny_checkpoint(folder: Path, tokenizer_dir: Path, layout: str = "v2", seed: int = 0,
                    **arch_options: object) -> CrammedBertForMaskedLM:
    """A tiny random cram checkpoint saved with `save_checkpoint` beside the given tokenizer; returns the model.
    `arch_options`: arch budget fields, e.g. `**MODERN_ARCH`."""
    vocab = Tokenizer.from_file(str(tokenizer_dir / "tokenizer.json")).get_vocab_size()
    torch.manual_seed(seed)
    arch = ArchBudget(layout=layout, num_layers=2, hidden_size=32, num_heads=4, intermediate_size=64,
                      vocab_size=vocab, max_seq_length=32, **arch_options)
    model = CrammedBertForMaskedLM(CrammedBertConfig.from_arch(arch)).eval()
    save_checkpoint(model, folder, tokenizer_path=tokenizer_dir)
    return model
