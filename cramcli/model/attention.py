"""Self-attention with three interchangeable backends behind one module and one weight layout.

The fused projection `qkv` is a bias-free Linear(hidden → 3·hidden) whose output rows are
`[Q all heads | K all heads | V all heads]`, head-major inside each block. This is the v1 flash-attn layout
(`flash_mha.Wqkv`, "(three h d)") and nn.MultiheadAttention's `in_proj_weight` layout, so viewing the output as
[B, S, 3, heads, head_size] feeds flash-attn's packed kernels directly and SDPA after one permute (a view).

Backends (`config.attention`):
- `pytorch`: torch.nn.functional.scaled_dot_product_attention, runs everywhere (picks flash/mem-efficient
  kernels on CUDA by itself when the mask allows).
- `flash`: the flash-attn package (CUDA, fp16/bf16 only); padded batches go through its varlen kernel.
- `reference`: softmax(QKᵀ/√d)·V written out, for tests.
All honour the padding mask unless `config.legacy_ignore_padding` (the original v1 flash model ignored it).

Options (off in the recipe): QK-norm (`config.qk_norm`) normalises each head's queries and keys, then rotary
positions (`config.position_embedding`) rotate them; both act on the projected q and k before any backend, so
every backend computes the same function from the same weights and `convert-attention` stays a plain copy.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from cramcli.model.config import CrammedBertConfig
from cramcli.model.errors import BackendUnavailable


def padding_mask(attention_mask: torch.Tensor | None, config: CrammedBertConfig) -> torch.Tensor | None:
    """[B, S] 1/0 mask → bool [B, S] (True = real token), or None when attention must see every position."""
    if attention_mask is None or config.legacy_ignore_padding:
        return None
    return attention_mask.bool()


def rotary_tables(max_seq_length: int, head_size: int, base: float) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and sin of position · θ^(−2i/d) → two [S, head_size] tables, each frequency used for both halves;
    the sin table's first half is negated, so a rotation is x·cos + swap_halves(x)·sin."""
    inv_freq = 1.0 / (base ** (torch.arange(0, head_size, 2, dtype=torch.float64) / head_size))
    angles = torch.outer(torch.arange(max_seq_length, dtype=torch.float64), inv_freq)
    cos, sin = angles.cos(), angles.sin()
    return torch.cat((cos, cos), dim=-1).float(), torch.cat((-sin, sin), dim=-1).float()


class Rotary(nn.Module):
    """Rotary position embedding (RoFormer), the half-split form: dims i and i + d/2 form a rotated pair.
    The tables are non-persistent buffers (never saved; rebuilt by `_init_weights` after a meta-device init)."""

    def __init__(self, config: CrammedBertConfig) -> None:
        super().__init__()
        self.head_size, self.base, self.max_seq_length = config.head_size, config.rotary_base, config.max_seq_length
        cos, sin = rotary_tables(config.max_seq_length, config.head_size, config.rotary_base)
        self.register_buffer("cos", cos, persistent=False)
        self.register_buffer("sin", sin, persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x [B, S, ..., d] → the same, position s rotated by its angles (in x's dtype)."""
        seq, extra = x.shape[1], x.dim() - 3  # axes between the sequence and the head dimension
        shape = (seq, *(1,) * extra, self.head_size)
        cos, sin = self.cos[:seq].view(shape).to(x.dtype), self.sin[:seq].view(shape).to(x.dtype)
        first, second = x.chunk(2, dim=-1)
        # (first, second) → (first·cos − second·sin, second·cos + first·sin), in three passes over x.
        return torch.addcmul(x * cos, torch.cat((second, first), dim=-1), sin)


def _head_norm(config: CrammedBertConfig) -> nn.Module:
    """QK-norm of one of queries or keys: over the head dimension, a learned scale (and LayerNorm's shift) per
    dimension, shared by the heads."""
    if config.qk_norm == "rms":
        return nn.RMSNorm(config.head_size, eps=config.norm_eps)
    return nn.LayerNorm(config.head_size, eps=config.norm_eps)


class SelfAttention(nn.Module):
    def __init__(self, config: CrammedBertConfig) -> None:
        super().__init__()
        self.num_heads, self.head_size = config.num_heads, config.head_size
        self.backend = config.attention
        self.dropout = config.attention_dropout
        self.qkv = nn.Linear(config.hidden_size, 3 * config.hidden_size, bias=False)
        self.dense = nn.Linear(config.hidden_size, config.hidden_size, bias=False)
        self.q_norm = _head_norm(config) if config.qk_norm != "none" else None
        self.k_norm = _head_norm(config) if config.qk_norm != "none" else None
        self.rotary = Rotary(config) if config.uses_rotary else None
        self.rewrites_qk = config.qk_norm != "none" or self.rotary is not None

    def _rewrite_qk(self, qkv: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """QK-norm, then rotary positions: qkv [B, S, 3, heads, d] → q, k (new) and v, each [B, S, heads, d].
        One `unbind`, whose backward stacks the three gradients in one pass. The norms compute in their weights'
        dtype (fp32 under autocast, as autocast runs the model's LayerNorms) and hand back the input's."""
        q, k, v = qkv.unbind(2)
        if self.q_norm is not None and self.k_norm is not None:
            dtype = self.q_norm.weight.dtype
            q, k = self.q_norm(q.to(dtype)).to(v.dtype), self.k_norm(k.to(dtype)).to(v.dtype)
        if self.rotary is not None:
            q, k = self.rotary(q), self.rotary(k)
        return q, k, v

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """x [B, S, hidden], mask bool [B, S] (True = attend) or None → [B, S, hidden]."""
        batch, seq, hidden = x.shape
        qkv = self.qkv(x).view(batch, seq, 3, self.num_heads, self.head_size)
        dropout = self.dropout if self.training else 0.0
        if self.backend == "flash":
            if self.rewrites_qk:  # flash-attn takes the packed layout
                qkv = torch.stack(self._rewrite_qk(qkv), dim=2)
            out = _flash(qkv, mask, dropout)
        else:
            if self.rewrites_qk:
                q, k, v = (t.transpose(1, 2) for t in self._rewrite_qk(qkv))
            else:
                q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # 3 × [B, heads, S, head_size], views
            keys = None if mask is None else mask[:, None, None, :]  # broadcast over heads and queries
            if self.backend == "reference":
                out = _reference(q, k, v, keys, dropout)
            else:
                out = F.scaled_dot_product_attention(q, k, v, attn_mask=keys, dropout_p=dropout)
            out = out.transpose(1, 2)
        return self.dense(out.reshape(batch, seq, hidden))


def _reference(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, keys: torch.Tensor | None,
               dropout: float) -> torch.Tensor:
    scores = q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1])
    if keys is not None:
        scores = scores.masked_fill(~keys, float("-inf"))
    probs = F.dropout(scores.softmax(dim=-1), p=dropout, training=dropout > 0)
    return probs @ v


def flash_available() -> bool:
    try:
        import flash_attn  # noqa: F401
    except ImportError:
        return False
    return torch.cuda.is_available()


def _flash(qkv: torch.Tensor, mask: torch.Tensor | None, dropout: float) -> torch.Tensor:
    """qkv [B, S, 3, heads, d] → [B, S, heads, d] with flash-attn; padded rows are packed for the varlen kernel."""
    if qkv.device.type != "cuda" or qkv.dtype not in (torch.float16, torch.bfloat16):
        raise BackendUnavailable(f"attention 'flash' needs CUDA and fp16/bf16 (autocast); got {qkv.device.type} {qkv.dtype}:"
                         " use attention 'pytorch' (cram convert --attention pytorch CKPT -o OUT)")
    try:
        from flash_attn import flash_attn_qkvpacked_func, flash_attn_varlen_qkvpacked_func
    except ImportError:
        raise BackendUnavailable("attention 'flash' needs the flash-attn package (pip install -e '.[flash]');"
                         " or use attention 'pytorch'") from None
    if mask is None:
        return flash_attn_qkvpacked_func(qkv, dropout_p=dropout)
    batch, seq = mask.shape
    lengths = mask.sum(dim=1, dtype=torch.int32)
    cu_seqlens = F.pad(lengths.cumsum(0, dtype=torch.int32), (1, 0))
    # nonzero and .item() synchronise with the host; the varlen kernel needs both on the CPU side anyway.
    index = mask.flatten().nonzero().squeeze(1)
    packed = qkv.flatten(0, 1).index_select(0, index)
    out = flash_attn_varlen_qkvpacked_func(packed, cu_seqlens, int(lengths.max().item()), dropout_p=dropout)
    full = out.new_zeros(batch * seq, *out.shape[1:])
    return full.index_copy(0, index, out).view(batch, seq, *out.shape[1:])
