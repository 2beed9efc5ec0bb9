"""A straightforward eager BERT-style masked LM with the crammed v1 math (pre-LN, gated GELU FFN, no biases in
linear layers, tied decoder, sparse prediction of the masked positions), written for clarity, not speed.
Benchmarks compare cram's model and loop against it."""

from __future__ import annotations

import math
from types import SimpleNamespace

import torch
from torch import nn
from torch.nn import functional as F


class _Layer(nn.Module):
    def __init__(self, h: int, heads: int, inter: int, eps: float) -> None:
        super().__init__()
        self.heads = heads
        self.norm1, self.norm2 = nn.LayerNorm(h, eps=eps), nn.LayerNorm(h, eps=eps)
        self.qkv, self.out = nn.Linear(h, 3 * h, bias=False), nn.Linear(h, h, bias=False)
        self.ffn_in, self.ffn_out = nn.Linear(h, inter, bias=False), nn.Linear(inter // 2, h, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, s, h = x.shape
        q, k, v = self.qkv(self.norm1(x)).view(b, s, 3, self.heads, h // self.heads).permute(2, 0, 3, 1, 4)
        scores = q @ k.transpose(-1, -2) / math.sqrt(h // self.heads)
        x = x + self.out((scores.softmax(-1) @ v).transpose(1, 2).reshape(b, s, h))
        gate, value = self.ffn_in(self.norm2(x)).chunk(2, dim=-1)
        return x + self.ffn_out(F.gelu(gate) * value)


class ReferenceMLM(nn.Module):
    def __init__(self, arch) -> None:  # an ArchBudget
        super().__init__()
        h = arch.hidden_size
        self.embed = nn.Embedding(arch.vocab_size, h)
        self.pos = nn.Embedding(arch.max_seq_length, h)
        self.emb_norm = nn.LayerNorm(h, eps=arch.norm_eps)
        self.layers = nn.ModuleList(
            _Layer(h, arch.num_heads, arch.intermediate_size, arch.norm_eps) for _ in range(arch.num_layers))
        self.final_norm = nn.LayerNorm(h, eps=arch.norm_eps)
        self.head = nn.Sequential(nn.Linear(h, h, bias=False), nn.GELU(), nn.LayerNorm(h, eps=arch.norm_eps))
        for p in self.parameters():
            if p.dim() > 1:
                nn.init.trunc_normal_(p, std=arch.init_std)

    def forward(self, input_ids: torch.Tensor, labels: torch.Tensor) -> SimpleNamespace:
        pos = torch.arange(input_ids.shape[1], device=input_ids.device)
        x = self.emb_norm(self.embed(input_ids) + self.pos(pos))
        for layer in self.layers:
            x = layer(x)
        x = self.final_norm(x)
        keep = labels.view(-1) != -100
        logits = self.head(x.view(-1, x.shape[-1])[keep]) @ self.embed.weight.T
        return SimpleNamespace(loss=F.cross_entropy(logits, labels.view(-1)[keep]), logits=logits)
