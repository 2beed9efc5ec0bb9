"""Crammed BERT: sizes, attention backends, padding, sparse prediction, heads, checkpoints, original fixtures."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from hf_helpers import write_tokenizer

from cramcli.budgets import ArchBudget
from cramcli.model import (
    CrammedBertConfig,
    CrammedBertForMaskedLM,
    CrammedBertForSequenceClassification,
    CrammedBertModel,
)
from cramcli.model.checkpoint import CheckpointError, is_checkpoint, load_pretrained, save_checkpoint

FIXTURES = Path(__file__).resolve().parents[2] / "shared" / "fixtures" / "cramming"
TINY = {"num_layers": 2, "hidden_size": 32, "num_heads": 4, "intermediate_size": 74, "vocab_size": 97,
        "max_seq_length": 16}


def tiny(layout: str = "v1", **overrides: object) -> CrammedBertConfig:
    torch.manual_seed(0)
    return CrammedBertConfig.from_arch(ArchBudget(layout=layout, **TINY), **overrides)


def batch(padded: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(1)
    ids = torch.randint(7, 97, (3, 12), generator=gen)
    mask = torch.ones_like(ids)
    if padded:
        mask[2, 5:] = 0
        ids[2, 5:] = 0
    return ids, mask


@pytest.mark.parametrize(("layout", "expected"), [("v1", 120_179_713), ("v2", 119_589_889)])
def test_24_hour_arch_has_the_recipe_parameter_count(layout: str, expected: int) -> None:
    with torch.device("meta"):
        model = CrammedBertForMaskedLM(CrammedBertConfig.from_arch(ArchBudget(layout=layout)))
    assert sum(p.numel() for p in model.parameters()) == expected


def test_decoder_is_tied_to_the_embedding_and_init_follows_the_recipe() -> None:
    model = CrammedBertForMaskedLM(tiny())
    assert model.decoder.weight is model.encoder.embedding.word_embedding.weight
    assert model.decoder.bias is None and model.encoder.layers[0].attn.qkv.bias is None
    assert torch.allclose(model.encoder.embedding.pos_embedding.scale_factor, torch.tensor([32 ** -0.5]))
    assert abs(model.encoder.layers[0].ffn.dense_in.weight.std().item() - 0.02) < 0.003
    assert "encoder.embedding.pos_embedding.table" not in model.state_dict()  # rebuilt, never saved


@pytest.mark.parametrize("backend", ["pytorch"])
def test_backends_agree_with_the_reference_attention(backend: str) -> None:
    ids, mask = batch()
    ref = CrammedBertModel(tiny(attention="reference")).eval()
    other = CrammedBertModel(tiny(attention=backend)).eval()
    other.load_state_dict(ref.state_dict())
    with torch.no_grad():
        for m in (None, mask):
            torch.testing.assert_close(other(ids, m).last_hidden_state, ref(ids, m).last_hidden_state,
                                       atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("backend", ["pytorch", "reference"])
def test_padding_does_not_change_the_real_tokens(backend: str) -> None:
    ids, mask = batch()
    model = CrammedBertModel(tiny(attention=backend)).eval()
    with torch.no_grad():
        padded = model(ids, mask).last_hidden_state[2, :5]
        alone = model(ids[2:, :5]).last_hidden_state[0]
        legacy = CrammedBertModel(tiny(attention=backend, legacy_ignore_padding=True)).eval()
        legacy.load_state_dict(model.state_dict())
        visible = legacy(ids, mask).last_hidden_state[2, :5]
    torch.testing.assert_close(padded, alone, atol=1e-5, rtol=1e-5)
    assert (visible - alone).abs().max() > 1e-3  # the fidelity switch really lets padding in


def test_flash_backend_refuses_the_cpu_with_a_plain_runtime_error() -> None:
    model = CrammedBertModel(tiny(attention="flash")).eval()
    with pytest.raises(RuntimeError, match="flash"):
        model(batch()[0])


@pytest.mark.parametrize("mode", ["dynamic", "static", "off"])
def test_sparse_prediction_loss_equals_the_dense_loss_over_masked_positions(mode: str) -> None:
    ids, _ = batch(padded=False)
    labels = torch.full_like(ids, -100)
    labels[:, ::4] = ids[:, ::4]  # exactly a quarter of every row, as v2's exact masking does
    model = CrammedBertForMaskedLM(tiny(sparse_prediction=mode, sparse_rate=0.25)).eval()
    with torch.no_grad():
        dense = model(ids).logits
        out = model(ids, labels=labels)
    expected = torch.nn.functional.cross_entropy(dense[labels != -100], labels[labels != -100])
    torch.testing.assert_close(out.loss, expected, atol=1e-5, rtol=1e-5)
    assert out.logits.shape == ((9, 97) if mode != "off" else (3, 12, 97))


def test_static_sparse_prediction_keeps_its_shape_when_fewer_tokens_are_masked() -> None:
    ids, _ = batch(padded=False)
    labels = torch.full_like(ids, -100)
    labels[0, 3] = ids[0, 3]
    out = CrammedBertForMaskedLM(tiny("v2", sparse_prediction="static", sparse_rate=0.25))(ids, labels=labels)
    assert out.logits.shape == (9, 97) and torch.isfinite(out.loss)


@pytest.mark.parametrize(("num_labels", "pooler"), [(3, "zero_index"), (1, "avg")])
def test_classifier_head_uses_num_labels_and_the_right_loss(num_labels: int, pooler: str) -> None:
    ids, mask = batch()
    model = CrammedBertForSequenceClassification(tiny(num_labels=num_labels, pooler=pooler)).eval()
    labels = torch.tensor([0.5, 1.0, 2.0]) if num_labels == 1 else torch.tensor([0, 2, 1])
    out = model(ids, mask, labels=labels)
    assert out.logits.shape == (3, num_labels)
    logits = out.logits.view(-1) if num_labels == 1 else out.logits
    fn = torch.nn.functional.mse_loss if num_labels == 1 else torch.nn.functional.cross_entropy
    torch.testing.assert_close(out.loss, fn(logits, labels))


def test_save_then_auto_from_pretrained_gives_identical_logits(tmp_path: Path) -> None:
    # `cramcli.model` (imported above) registered the auto classes.
    from transformers import AutoModel, AutoModelForMaskedLM, AutoModelForSequenceClassification

    ids, mask = batch()
    model = CrammedBertForMaskedLM(tiny("v2")).eval()
    write_tokenizer(tmp_path / "tok", vocab_size=97)
    save_checkpoint(model, tmp_path / "ck", tokenizer_path=tmp_path / "tok" / "tokenizer.json")
    assert {"config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"} <= {
        p.name for p in (tmp_path / "ck").iterdir()}
    assert is_checkpoint(tmp_path / "ck") and not is_checkpoint(tmp_path / "tok")
    with torch.no_grad():
        expected = model(ids, mask).logits
        auto = AutoModelForMaskedLM.from_pretrained(tmp_path / "ck").eval()
        assert torch.equal(auto(ids, mask).logits, expected)
        assert torch.equal(load_pretrained(tmp_path / "ck")(ids, mask).logits, expected)
        base = AutoModel.from_pretrained(tmp_path / "ck").eval()
        torch.testing.assert_close(base(ids, mask).last_hidden_state, model.encoder(ids, mask).last_hidden_state)
    cls = AutoModelForSequenceClassification.from_pretrained(tmp_path / "ck", num_labels=3)
    assert cls.classifier.out_features == 3
    with pytest.raises(Exception, match="already exists"):
        save_checkpoint(model, tmp_path / "ck")


def test_load_pretrained_heads_overrides_and_run_folders(tmp_path: Path) -> None:
    model = CrammedBertForMaskedLM(tiny())
    save_checkpoint(model, tmp_path / "run" / "final")
    cls = load_pretrained(tmp_path / "run", head="cls", num_labels=3, classifier_dropout=0.0,
                          legacy_ignore_padding=True)
    assert isinstance(cls, CrammedBertForSequenceClassification) and cls.config.num_labels == 3
    assert cls.config.legacy_ignore_padding and cls.pooler.dropout.p == 0.0
    assert torch.equal(cls.encoder.layers[1].attn.qkv.weight, model.encoder.layers[1].attn.qkv.weight)
    base = load_pretrained(tmp_path / "run", head="base")
    assert isinstance(base, CrammedBertModel)
    with pytest.raises(CheckpointError, match="not a checkpoint folder"):
        load_pretrained(tmp_path)


@pytest.mark.parametrize("variant", ["v1-legacy-tiny", "v2-tiny"])
@pytest.mark.parametrize("backend", ["pytorch", "reference"])
def test_original_cramming_checkpoints_reproduce_their_reference_outputs(variant: str, backend: str) -> None:
    if not (FIXTURES / variant).is_dir():
        pytest.skip("../shared/fixtures/cramming is not available")
    from safetensors.torch import load_file

    ref = load_file(str(FIXTURES / variant / "reference.safetensors"))
    model = load_pretrained(FIXTURES / variant, attention=backend)
    assert model.config.layout == variant[:2]
    with torch.no_grad():
        hidden = model.encoder(ref["input_ids"]).last_hidden_state
        logits = model(ref["input_ids"]).logits
        assert (hidden - ref["hidden"]).abs().max() <= 1e-5
        assert (logits - ref["mlm_logits"]).abs().max() <= 1e-5
        if "hidden_masked" in ref:
            masked = model.encoder(ref["input_ids"], ref["attention_mask"]).last_hidden_state
            assert (masked - ref["hidden_masked"]).abs().max() <= 1e-5
