"""The original cramming training step, rewritten plainly for the benchmarks: same math, same data layout.

It follows the original code's structure rather than cram's: sequence-first hidden states ([S, B, H], with
the transposes in and out of the encoder), GPT-NeoX style attention (per-head interleaved fused QKV split into
views, `baddbmm` for the scores, softmax, `bmm`, then permute + contiguous back), a GLU FFN from `chunk`,
sparse prediction by boolean indexing, `nn.CrossEntropyLoss`, and AdamW without foreach. No kernel fusion,
no SDPA. Benchmarks time cram's step against it in the same process run.
"""

from __future__ import annotations

import math
from types import SimpleNamespace

import torch
from torch import nn
from torch.nn import functional as F


class _SeqFirstAttention(nn.Module):
    def __init__(self, h: int, heads: int) -> None:
        super().__init__()
        self.heads, self.head_size = heads, h // heads
        self.query_key_value = nn.Linear(h, 3 * h, bias=False)
        self.dense = nn.Linear(h, h, bias=False)
        self.norm_factor = 1.0 / math.sqrt(self.head_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x [S, B, H]
        s, b, h = x.shape
        mixed = self.query_key_value(x).view(s, b, self.heads, 3 * self.head_size)
        q, k, v = torch.split(mixed, [self.head_size] * 3, dim=3)
        q = q.reshape(s, b * self.heads, self.head_size)
        k = k.reshape(s, b * self.heads, self.head_size)
        v = v.reshape(s, b * self.heads, self.head_size)
        scores = torch.empty(b * self.heads, s, s, dtype=x.dtype, device=x.device)
        scores = torch.baddbmm(scores, q.transpose(0, 1), k.transpose(0, 1).transpose(1, 2), beta=0.0,
                               alpha=self.norm_factor)
        probs = torch.softmax(scores.view(b, self.heads, s, s), dim=-1)
        context = torch.bmm(probs.view(b * self.heads, s, s), v.transpose(0, 1))
        context = context.view(b, self.heads, s, self.head_size).permute(2, 0, 1, 3).contiguous()
        return self.dense(context.view(s, b, h))


class _Layer(nn.Module):
    def __init__(self, h: int, heads: int, inter: int, eps: float) -> None:
        super().__init__()
        self.norm1, self.norm2 = nn.LayerNorm(h, eps=eps), nn.LayerNorm(h, eps=eps)
        self.attn = _SeqFirstAttention(h, heads)
        self.dense_in, self.dense_out = nn.Linear(h, inter, bias=False), nn.Linear(inter // 2, h, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        value, gate = self.dense_in(self.norm2(x)).chunk(2, dim=-1)
        return x + self.dense_out(F.gelu(gate) * value)


class ReferenceMLM(nn.Module):
    """Crammed BERT v1 (pre-LN, no linear biases, gated GELU, scaled sinusoidal positions, final norm, bare
    linear prediction head, tied decoder, sparse prediction) in the original code's layout."""

    def __init__(self, arch) -> None:  # an ArchBudget
        super().__init__()
        h = arch.hidden_size
        self.word_embedding = nn.Embedding(arch.vocab_size, h)
        position = torch.arange(arch.max_seq_length, dtype=torch.float).unsqueeze(1)
        freq = torch.exp(torch.arange(0, h, 2).float() * (-math.log(10000.0) / h))
        table = torch.zeros(arch.max_seq_length, h)
        table[:, 0::2], table[:, 1::2] = torch.sin(position * freq), torch.cos(position * freq)
        self.register_buffer("pos_table", table, persistent=False)
        self.pos_scale = nn.Parameter(torch.tensor(1.0 / math.sqrt(h)))
        self.emb_norm = nn.LayerNorm(h, eps=arch.norm_eps)
        self.layers = nn.ModuleList(
            _Layer(h, arch.num_heads, arch.intermediate_size, arch.norm_eps) for _ in range(arch.num_layers))
        self.final_norm = nn.LayerNorm(h, eps=arch.norm_eps)
        self.prediction_head = nn.Linear(h, h, bias=False)
        self.decoder = nn.Linear(h, arch.vocab_size, bias=False)
        self.decoder.weight = self.word_embedding.weight
        self.loss_fn = nn.CrossEntropyLoss()
        for p in self.parameters():
            if p.dim() > 1:
                nn.init.normal_(p, std=arch.init_std)

    def forward(self, input_ids: torch.Tensor, labels: torch.Tensor) -> SimpleNamespace:
        seq = input_ids.shape[1]
        x = self.emb_norm(self.word_embedding(input_ids) + self.pos_scale * self.pos_table[:seq])
        x = x.transpose(0, 1).contiguous()  # the original runs its layers sequence-first
        for layer in self.layers:
            x = layer(x)
        x = self.final_norm(x).transpose(0, 1).contiguous()
        x, labels = x.view(-1, x.shape[-1]), labels.view(-1)
        keep = labels != -100
        logits = self.decoder(self.prediction_head(x[keep]))
        return SimpleNamespace(loss=self.loss_fn(logits, labels[keep]), logits=logits)
