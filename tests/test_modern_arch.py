"""The arch budget's modern options (docs/recipes.md): each one's behaviour, and that every option survives
everything a model goes through — save/load, the transformers auto classes, other attention backends
(convert-attention), bf16 autocast, torch.compile. Defaults are the recipe's (test_model.py pins those)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from hf_helpers import MODERN_ARCH, write_tokenizer
from hf_helpers import tiny_checkpoint as make_checkpoint
from safetensors import safe_open

from cramcli import budgets
from cramcli.budgets import ArchBudget
from cramcli.model import CrammedBertConfig, CrammedBertForMaskedLM, CrammedBertModel, attention
from cramcli.model.checkpoint import load_pretrained
from cramcli.utils.errors import UsageError

TINY = {"num_layers": 2, "hidden_size": 32, "num_heads": 4, "intermediate_size": 64, "vocab_size": 97,
        "max_seq_length": 16}
# A second combination, so each choice of every option is exercised somewhere.
MODERN_B = {"position_embedding": "rotary+sinusoidal", "qk_norm": "layer", "activation": "silu"}


def tiny(**options: object) -> CrammedBertConfig:
    torch.manual_seed(0)
    return CrammedBertConfig.from_arch(ArchBudget(layout="v2", **TINY, **options))


def batch() -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(1)
    ids = torch.randint(7, 97, (3, 12), generator=gen)
    mask = torch.ones_like(ids)
    mask[2, 5:] = 0
    ids[2, 5:] = 0
    return ids, mask


def test_defaults_are_the_recipe_and_the_presets_use_them() -> None:
    default = ArchBudget()
    assert (default.position_embedding, default.qk_norm, default.activation, default.glu,
            default.zero_init_residual, default.tie_decoder) == ("scaled-sinusoidal", "none", "gelu", True, False, True)
    for preset in ("24", "v2", "demo"):
        arch = budgets.load("arch", preset)
        fields = {*MODERN_ARCH, "zero_init_residual", "rotary_base"}
        assert {k: getattr(arch, k) for k in fields} == {k: getattr(default, k) for k in fields}
        config = CrammedBertConfig.from_arch(arch)
        assert config.tie_word_embeddings and config.uses_sinusoid and not config.uses_rotary


@pytest.mark.parametrize(("field", "value", "message"), [
    ("position_embedding", "alibi", "position_embedding: got 'alibi'"),
    ("qk_norm", "l2", "qk_norm: got 'l2'"),
    ("activation", "tanh", "activation: got 'tanh'"),
])
def test_bad_option_values_are_one_line_errors(tmp_path: Path, field: str, value: str, message: str) -> None:
    path = tmp_path / "arch.json"
    path.write_text(json.dumps({field: value}))
    with pytest.raises(UsageError, match=message):
        budgets.load("arch", path)


def test_rotary_needs_an_even_head_size_and_a_plain_ffn_an_odd_width_is_fine() -> None:
    with pytest.raises(ValueError, match="even head size"):
        ArchBudget(hidden_size=36, num_heads=4, position_embedding="rotary")
    ArchBudget(hidden_size=36, num_heads=4)  # head size 9 is fine without rotary
    assert ArchBudget(intermediate_size=75, glu=False).intermediate_size == 75
    with pytest.raises(ValueError, match="must be even"):
        ArchBudget(intermediate_size=75)


def test_rotary_scores_depend_only_on_the_relative_offset() -> None:
    rotary = attention.Rotary(tiny(position_embedding="rotary"))
    gen = torch.Generator().manual_seed(0)
    q, k = torch.randn(8, generator=gen), torch.randn(8, generator=gen)
    seq = 16

    def score(m: int, n: int) -> float:
        qs, ks = torch.zeros(1, seq, 1, 8), torch.zeros(1, seq, 1, 8)  # [B, S, heads, d]
        qs[0, m, 0], ks[0, n, 0] = q, k
        return float((rotary(qs)[0, m, 0] * rotary(ks)[0, n, 0]).sum())

    assert score(2, 5) == pytest.approx(score(9, 12), abs=1e-5)
    assert score(2, 5) != pytest.approx(score(2, 6), abs=1e-3)
    x = torch.randn(2, seq, 2, 4, 8, generator=gen)  # [B, S, (q, k), heads, d]
    torch.testing.assert_close(rotary(x).norm(dim=-1), x.norm(dim=-1))  # a rotation
    torch.testing.assert_close(rotary(x)[:, 0], x[:, 0])  # position 0 is not rotated


def test_rotary_only_models_have_no_absolute_position_but_still_see_order() -> None:
    model = CrammedBertModel(tiny(position_embedding="rotary")).eval()
    assert model.embedding.pos_embedding is None
    assert not any("pos_embedding" in k or "rotary" in k for k in model.state_dict())  # tables are rebuilt
    ids, _ = batch()
    flipped = ids.flip(1)
    with torch.no_grad():
        out, out_flipped = model(ids).last_hidden_state, model(flipped).last_hidden_state
    assert (out.flip(1) - out_flipped).abs().max() > 1e-3  # not a bag of words


@pytest.mark.parametrize("kind", ["rms", "layer"])
def test_qk_norm_makes_attention_blind_to_the_scale_of_q_and_k(kind: str) -> None:
    ids, mask = batch()
    for qk_norm, invariant in ((kind, True), ("none", False)):
        model = CrammedBertModel(tiny(qk_norm=qk_norm)).eval()
        with torch.no_grad():
            before = model(ids, mask).last_hidden_state
            for layer in model.layers:
                layer.attn.qkv.weight[: 2 * 32] *= 7.0  # the q and k blocks
            after = model(ids, mask).last_hidden_state
        if invariant:
            torch.testing.assert_close(after, before, atol=2e-4, rtol=1e-4)
        else:
            assert (after - before).abs().max() > 1e-3


@pytest.mark.parametrize(("activation", "glu"), [("relu2", False), ("relu2", True), ("silu", True), ("gelu", False)])
def test_ffn_activation_and_gate(activation: str, glu: bool) -> None:
    ffn = CrammedBertModel(tiny(activation=activation, glu=glu)).layers[0].ffn
    assert ffn.dense_out.in_features == (32 if glu else 64)
    x = torch.randn(2, 5, 32, generator=torch.Generator().manual_seed(0))
    act = {"relu2": lambda t: torch.relu(t) ** 2, "silu": torch.nn.functional.silu,
           "gelu": torch.nn.functional.gelu}[activation]
    h = x @ ffn.dense_in.weight.T
    expected = (h[..., :32] * act(h[..., 32:]) if glu else act(h)) @ ffn.dense_out.weight.T
    torch.testing.assert_close(ffn(x), expected)


def test_zero_init_makes_every_layer_the_identity_and_a_load_keeps_the_trained_weights(tmp_path: Path) -> None:
    model = CrammedBertForMaskedLM(tiny(zero_init_residual=True)).eval()
    for layer in model.encoder.layers:
        assert not layer.attn.dense.weight.any() and not layer.ffn.dense_out.weight.any()
        assert layer.attn.qkv.weight.std() > 0.01 and layer.ffn.dense_in.weight.std() > 0.01
    ids, mask = batch()
    enc = model.encoder
    with torch.no_grad():
        torch.testing.assert_close(enc(ids, mask).last_hidden_state, enc.final_norm(enc.embedding(ids)))
        for layer in enc.layers:  # as if trained: a later load must keep these, not re-zero them
            layer.attn.dense.weight.normal_(0, 0.02)
            layer.ffn.dense_out.weight.normal_(0, 0.02)
    model.save_pretrained(tmp_path / "ck")
    back = CrammedBertForMaskedLM.from_pretrained(tmp_path / "ck").eval()
    assert all(torch.equal(a, b) for a, b in zip(back.state_dict().values(), model.state_dict().values(), strict=True))


def test_untied_decoder_is_its_own_matrix_saved_and_loaded(tmp_path: Path) -> None:
    model = CrammedBertForMaskedLM(tiny(tie_decoder=False)).eval()
    assert model.decoder.weight is not model.encoder.embedding.word_embedding.weight
    assert not torch.equal(model.decoder.weight, model.encoder.embedding.word_embedding.weight)
    with torch.no_grad():
        model.decoder.weight.add_(1.0)
    write_tokenizer(tmp_path / "tok", vocab_size=97)
    from cramcli.model.checkpoint import save_checkpoint

    save_checkpoint(model, tmp_path / "ck", tokenizer_path=tmp_path / "tok")
    with safe_open(str(tmp_path / "ck" / "model.safetensors"), "pt") as f:
        assert "decoder.weight" in set(f.keys())  # noqa: SIM118
    back = load_pretrained(tmp_path / "ck")
    assert torch.equal(back.decoder.weight, model.decoder.weight)
    assert back.decoder.weight is not back.encoder.embedding.word_embedding.weight
    # Training moves them apart: one optimizer step on the decoder leaves the embedding alone.
    ids, _ = batch()
    model.train()
    model(ids, labels=ids).loss.backward()
    assert model.encoder.embedding.word_embedding.weight.grad is not None
    assert not torch.equal(model.decoder.weight.grad, model.encoder.embedding.word_embedding.weight.grad)


@pytest.mark.parametrize("options", [MODERN_ARCH, MODERN_B], ids=["modern", "modern-b"])
def test_backends_agree_with_every_option(options: dict, monkeypatch: pytest.MonkeyPatch) -> None:
    ids, mask = batch()
    ref = CrammedBertModel(tiny(attention="reference", **options)).eval()
    with torch.no_grad():  # zero-init would hide attention: give the projections weights
        for layer in ref.layers:
            layer.attn.dense.weight.normal_(0, 0.05)
            layer.ffn.dense_out.weight.normal_(0, 0.05)
    expected = ref(ids, mask).last_hidden_state

    def packed_attention(qkv: torch.Tensor, keys: torch.Tensor | None, dropout: float) -> torch.Tensor:
        """flash-attn's contract on the CPU: packed [B, S, 3, heads, d] in, [B, S, heads, d] out."""
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)
        mask4 = None if keys is None else keys[:, None, None, :]
        return attention._reference(q, k, v, mask4, dropout).transpose(1, 2)

    monkeypatch.setattr(attention, "_flash", packed_attention)
    for backend in ("pytorch", "flash"):
        other = CrammedBertModel(tiny(attention=backend, **options)).eval()
        other.load_state_dict(ref.state_dict())
        with torch.no_grad():
            torch.testing.assert_close(other(ids, mask).last_hidden_state, expected, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("options", [MODERN_ARCH, MODERN_B], ids=["modern", "modern-b"])
def test_convert_attention_keeps_every_option_and_the_outputs(options: dict, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from cramcli.cli import app

    write_tokenizer(tmp_path / "tok")
    model = make_checkpoint(tmp_path / "src", tmp_path / "tok", **options)
    runner = CliRunner()
    res = runner.invoke(app, ["convert", "--attention", "flash", str(tmp_path / "src"), "-o", str(tmp_path / "flash")])
    assert res.exit_code == 0, res.output
    res = runner.invoke(app, ["convert", str(tmp_path / "flash"), "-o", str(tmp_path / "back"), "--json"])
    assert res.exit_code == 0, res.output
    config = json.loads((tmp_path / "back" / "config.json").read_text())
    assert {k: config[k] for k in options if k != "tie_decoder"} == {k: v for k, v in options.items()
                                                                     if k != "tie_decoder"}
    assert config["tie_word_embeddings"] == options.get("tie_decoder", True)
    report = json.loads((tmp_path / "back" / "report.json").read_text())
    assert report["weights_bit_identical"] and report["parity"]["max_abs_delta_logits"] < 1e-5
    ids, mask = batch()
    ids = ids.clamp(max=model.config.vocab_size - 1)
    with torch.no_grad():
        assert torch.equal(load_pretrained(tmp_path / "back")(ids, mask).logits, model(ids, mask).logits)


@pytest.mark.parametrize("options", [MODERN_ARCH, MODERN_B], ids=["modern", "modern-b"])
def test_bf16_autocast_follows_fp32(options: dict) -> None:
    model = CrammedBertForMaskedLM(tiny(**options)).eval()
    ids, mask = batch()
    with torch.no_grad():
        full = model(ids, mask).logits
        with torch.autocast("cpu", dtype=torch.bfloat16):
            half = model(ids, mask).logits
    assert half.dtype == torch.bfloat16 and bool(torch.isfinite(half).all())
    torch.testing.assert_close(half.float(), full, atol=0.1, rtol=0.05)


def test_torch_compile_traces_every_option_in_one_graph_with_the_same_outputs() -> None:
    """fullgraph=True fails on any graph break; the `aot_eager` backend traces forward and backward like
    inductor does, without a C++ compiler (fast on a CPU)."""
    torch._dynamo.reset()
    torch.manual_seed(0)
    config = CrammedBertConfig.from_arch(ArchBudget(layout="v2", **TINY, **MODERN_ARCH), sparse_prediction="static",
                                         sparse_rate=0.25)
    model = CrammedBertForMaskedLM(config).eval()
    ids, _ = batch()
    labels = torch.full_like(ids, -100)
    labels[:, ::4] = ids[:, ::4]
    eager = model(ids, labels=labels).loss
    compiled = torch.compile(model, backend="aot_eager", fullgraph=True)
    loss = compiled(ids, labels=labels).loss
    loss.backward()
    torch.testing.assert_close(loss, eager)
    assert all(p.grad is not None for n, p in model.named_parameters() if ".layers." in n)


@pytest.mark.slow
def test_inductor_compiles_every_option_like_the_trainer_does() -> None:
    """The default backend (inductor: generated C++ on a CPU), as `compile: true` uses it; no graph breaks."""
    torch._dynamo.reset()
    torch.manual_seed(0)
    config = CrammedBertConfig.from_arch(ArchBudget(layout="v2", **TINY, **MODERN_ARCH, zero_init_residual=True),
                                         sparse_prediction="static", sparse_rate=0.25)
    model = CrammedBertForMaskedLM(config).eval()
    ids, _ = batch()
    labels = torch.full_like(ids, -100)
    labels[:, ::4] = ids[:, ::4]
    eager = model(ids, labels=labels).loss
    loss = torch.compile(model, fullgraph=True)(ids, labels=labels).loss
    loss.backward()
    torch.testing.assert_close(loss, eager, atol=1e-5, rtol=1e-5)
