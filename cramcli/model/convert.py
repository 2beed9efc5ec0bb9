"""Original cramming checkpoints → cram: a config translation, a name table and the fused-QKV layout functions.

Pure functions on dicts and tensors (no files): `checkpoint.py` reads the files and calls these.
Original layouts (recipe §1.1.11, §1.3, §6):
- v1 `flash-attention-impl`: `attn.self_attention.flash_mha.Wqkv.weight`, rows [Q all heads | K | V];
- v1 `pytorch`: `attn.self_attention.attn.in_proj_weight`, the same rows (nn.MultiheadAttention), plus its
  neutralised `out_proj` buffers (identity, zeros);
- `self-attention` (v2): `attn.self_attention.query_key_value.weight`, rows per head [h0: q k v | h1: ...].
cram's own layout is [Q | K | V] (attention.py), so only the per-head interleaved one is permuted.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from typing import Any

import torch

ORIGINAL_MODEL_TYPE = "crammedBERT"
ORIGINAL_LAYOUTS = {"ScriptableMaskedLM": "v1", "ScriptableCrammedBERT": "v2"}
# Original attention type → cram backend that computes the same function (with the padding mask honoured).
ORIGINAL_ATTENTION = {"flash-attention-impl": "flash", "pytorch": "pytorch", "self-attention": "pytorch"}


def qkv_interleaved_to_blocks(weight: torch.Tensor, num_heads: int) -> torch.Tensor:
    """[heads·(q,k,v)·d, in] (NeoX, per head) → [(q,k,v)·heads·d, in] (cram/flash/MHA): swap the first two axes."""
    out_features, in_features = weight.shape
    head_size = out_features // (3 * num_heads)
    return weight.view(num_heads, 3, head_size, in_features).transpose(0, 1).reshape(out_features, in_features)


# (original name pattern, cram name, transform(tensor, num_heads)). `{i}` is a layer index.
Transform = Callable[[torch.Tensor, int], torch.Tensor] | None
NAME_TABLE: list[tuple[str, str, Transform]] = [
    ("encoder.embedding.word_embedding.weight", "encoder.embedding.word_embedding.weight", None),
    ("encoder.embedding.pos_embedding.scale_factor", "encoder.embedding.pos_embedding.scale_factor", None),
    ("encoder.embedding.norm.{p}", "encoder.embedding.norm.{p}", None),
    ("encoder.layers.{i}.norm1.{p}", "encoder.layers.{i}.norm1.{p}", None),
    ("encoder.layers.{i}.norm2.{p}", "encoder.layers.{i}.norm2.{p}", None),
    ("encoder.layers.{i}.attn.self_attention.flash_mha.Wqkv.weight", "encoder.layers.{i}.attn.qkv.weight", None),
    ("encoder.layers.{i}.attn.self_attention.attn.in_proj_weight", "encoder.layers.{i}.attn.qkv.weight", None),
    ("encoder.layers.{i}.attn.self_attention.query_key_value.weight", "encoder.layers.{i}.attn.qkv.weight",
     qkv_interleaved_to_blocks),
    ("encoder.layers.{i}.attn.dense.weight", "encoder.layers.{i}.attn.dense.weight", None),
    ("encoder.layers.{i}.ffn.dense_in.weight", "encoder.layers.{i}.ffn.dense_in.weight", None),
    ("encoder.layers.{i}.ffn.dense_out.weight", "encoder.layers.{i}.ffn.dense_out.weight", None),
    ("encoder.final_norm.{p}", "encoder.final_norm.{p}", None),
    ("prediction_head.weight", "prediction_head.weight", None),
    ("decoder.weight", "decoder.weight", None),
    # The original sequence-classification head (PoolingComponent + head), when a fine-tuned model is imported.
    ("pooler.dense.{p}", "pooler.dense.{p}", None),
    ("head.{p}", "classifier.{p}", None),
]

# Buffers of the original that are constants in the recipe: dropped after checking their value.
CONSTANTS: list[tuple[str, Callable[[torch.Tensor, int], bool], str]] = [
    ("encoder.p", lambda t, d: bool(torch.all(t == 1)), "1 (layer drop off)"),
    ("encoder.layers.{i}.alpha", lambda t, d: bool(torch.all(t == 1)), "1 (deepnorm off)"),
    ("encoder.layers.{i}.attn.self_attention.norm_factor",
     lambda t, d: math.isclose(float(t), 1 / math.sqrt(d), rel_tol=1e-6), "1/sqrt(head size)"),
    ("encoder.layers.{i}.attn.self_attention.attn.out_proj.weight",
     lambda t, d: bool(torch.equal(t, torch.eye(t.shape[0], dtype=t.dtype))), "the identity"),
    ("encoder.layers.{i}.attn.self_attention.attn.out_proj.bias", lambda t, d: not bool(t.any()), "zeros"),
]


def _regex(pattern: str) -> re.Pattern[str]:
    return re.compile(re.escape(pattern).replace(r"\{i\}", r"(?P<i>\d+)").replace(r"\{p\}", r"(?P<p>weight|bias)") + "$")


_NAMES = [(_regex(src), dst, fn) for src, dst, fn in NAME_TABLE]
_CONSTANTS = [(_regex(src), check, expected) for src, check, expected in CONSTANTS]


class ImportProblem(ValueError):
    """A checkpoint cram cannot import faithfully; the message names the field or tensor."""


def original_config(raw: dict[str, Any]) -> dict[str, Any]:
    """An original `config.json` (model_type crammedBERT, the arch under `arch`) → CrammedBertConfig fields.

    Every recipe feature cram does not implement is refused by name rather than silently approximated."""
    arch = raw.get("arch")
    if not isinstance(arch, dict):
        raise ImportProblem("model_type crammedBERT but no `arch` object")
    names = arch.get("architectures") or []
    layout = next((ORIGINAL_LAYOUTS[n] for n in names if n in ORIGINAL_LAYOUTS), None)
    if layout is None:
        raise ImportProblem(f"arch.architectures {names}: expected one of {', '.join(ORIGINAL_LAYOUTS)}")
    emb, att, head = arch.get("embedding") or {}, arch.get("attention") or {}, arch.get("classification_head") or {}
    attention = ORIGINAL_ATTENTION.get(att.get("type"))
    if attention is None:
        raise ImportProblem(f"arch.attention.type {att.get('type')!r}: supported {', '.join(ORIGINAL_ATTENTION)}")
    required = {
        "arch.norm": (arch.get("norm"), "LayerNorm"),
        "arch.norm_scheme": (arch.get("norm_scheme"), "pre"),
        "arch.nonlin": (arch.get("nonlin"), "GELUglu"),
        "arch.tie_weights": (arch.get("tie_weights"), True),
        "arch.decoder_bias": (arch.get("decoder_bias", False), False),
        "arch.use_bias": (arch.get("use_bias", False), False),
        "arch.final_norm": (arch.get("final_norm"), True),
        "arch.skip_head_transform": (arch.get("skip_head_transform"), True),
        "arch.ffn_layer_frequency": (arch.get("ffn_layer_frequency", 1), 1),
        "arch.deepnorm_scaling": (bool(arch.get("deepnorm_scaling")), False),
        "arch.recurrent_layers": (arch.get("recurrent_layers"), None),
        "arch.objective_layout": (arch.get("objective_layout", "MLM"), "MLM"),
        "arch.embedding.pos_embedding": (emb.get("pos_embedding"), "scaled-sinusoidal"),
        "arch.embedding.normalization": (emb.get("normalization"), True),
        "arch.embedding.embedding_dim": (emb.get("embedding_dim"), arch.get("hidden_size")),
        "arch.attention.causal_attention": (att.get("causal_attention", False), False),
        "arch.attention.qkv_bias": (att.get("qkv_bias", False), False),
        "arch.attention.rotary_embedding": (att.get("rotary_embedding", False), False),
        "arch.attention.skip_output_projection": (att.get("skip_output_projection", False), False),
        "arch.attention.sequence_op": (att.get("sequence_op", "torch-softmax"), "torch-softmax"),
        "arch.classification_head.include_ff_layer": (head.get("include_ff_layer", True), True),
        "arch.classification_head.nonlin": (head.get("nonlin", "Tanh"), "Tanh"),
    }
    wrong = [f"{k}={got!r} (cram supports {want!r})" for k, (got, want) in required.items() if got != want]
    if wrong:
        raise ImportProblem("unsupported architecture feature: " + "; ".join(wrong))
    sparse = arch.get("sparse_prediction", False)
    if isinstance(sparse, bool):
        sparse_fields = {"sparse_prediction": "dynamic" if sparse else "off"}
    else:
        sparse_fields = {"sparse_prediction": "static", "sparse_rate": float(sparse)} if sparse else \
            {"sparse_prediction": "off"}
    fields: dict[str, Any] = {
        "layout": layout,
        "num_layers": arch.get("num_transformer_layers"),
        "hidden_size": arch.get("hidden_size"),
        "num_heads": att.get("num_attention_heads"),
        "intermediate_size": arch.get("intermed_size"),
        "vocab_size": emb.get("vocab_size"),
        "max_seq_length": emb.get("max_seq_length"),
        "norm_eps": arch.get("norm_eps"),
        "hidden_dropout": arch.get("hidden_dropout_prob"),
        "attention_dropout": att.get("dropout_prob"),
        "embedding_dropout": emb.get("dropout_prob"),
        "init_std": (arch.get("init") or {}).get("std", 0.02),
        "attention": attention,
        "pad_token_id": emb.get("pad_token_id", 0),
        "pooler": head.get("pooler", "zero_index"),
        "classifier_head_dim": head.get("head_dim", 1024),
        "classifier_dropout": head.get("classifier_dropout", 0.1),
        **sparse_fields,
    }
    missing = [k for k, v in fields.items() if v is None]
    if missing:
        raise ImportProblem(f"arch lacks {', '.join(missing)}")
    if arch.get("num_labels"):
        fields["num_labels"] = int(arch["num_labels"])
    return fields


def original_state_dict(source: dict[str, torch.Tensor], num_heads: int, head_size: int) -> dict[str, torch.Tensor]:
    """Rename (and permute) every original tensor into cram's names; check and drop the constant buffers.

    The tied matrix may be stored under the embedding, the decoder, or both (then they must agree)."""
    out: dict[str, torch.Tensor] = {}
    unknown = []
    for name, tensor in source.items():
        for regex, check, expected in _CONSTANTS:
            if regex.match(name):
                if not check(tensor, head_size):
                    raise ImportProblem(f"tensor {name} must be {expected}; this variant is not supported")
                break
        else:
            for regex, dst, fn in _NAMES:
                found = regex.match(name)
                if found:
                    target = dst.format(**found.groupdict())
                    if target in out:
                        raise ImportProblem(f"tensor {name} maps to {target}, which another tensor already filled")
                    out[target] = fn(tensor, num_heads) if fn is not None else tensor
                    break
            else:
                unknown.append(name)
    if unknown:
        raise ImportProblem(f"unknown tensor(s) {', '.join(unknown[:3])}{' ...' if len(unknown) > 3 else ''}")
    embedding, decoder = "encoder.embedding.word_embedding.weight", "decoder.weight"
    if decoder in out:
        tied = out.pop(decoder)
        if embedding not in out:
            out[embedding] = tied
        elif not torch.equal(out[embedding], tied):
            raise ImportProblem("decoder.weight differs from the word embedding; crammed BERT ties them")
    return out
