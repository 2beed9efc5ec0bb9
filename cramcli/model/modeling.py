"""Crammed BERT (recipe §1): pre-LN encoder without linear biases, gated GELU, scaled sinusoidal positions.

The modern options of the arch budget (rotary positions, QK-norm, other activations, a plain FFN, zero-initialised
output projections, an untied decoder; docs/recipes.md) are config fields whose defaults are the recipe.

Reads top to bottom: embedding, layer, encoder (`CrammedBertModel`), then the masked-LM and the
sequence-classification heads. Module names follow the original cramming state dict (`encoder.embedding...`,
`encoder.layers.N.norm1`, `attn.dense`, `ffn.dense_in`, `prediction_head`, `decoder`) so the import table in
`convert.py` stays short; only the fused projection is renamed (`attn.qkv`, see attention.py for its layout).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn
from transformers import PreTrainedModel
from transformers import initialization as init
from transformers.modeling_outputs import BaseModelOutput, MaskedLMOutput, SequenceClassifierOutput

from cramcli.model.attention import Rotary, SelfAttention, padding_mask, rotary_tables
from cramcli.model.config import CrammedBertConfig

IGNORE_INDEX = -100


def sinusoid_table(max_seq_length: int, dim: int) -> torch.Tensor:
    """The fixed table of the original code: sin on even dims, cos on odd dims, base 10000 → [S, dim]."""
    position = torch.arange(0, max_seq_length, dtype=torch.float).unsqueeze(1)
    div_term = torch.exp(torch.arange(0, dim, 2).float() * (-math.log(10000.0) / dim))
    table = torch.zeros(max_seq_length, dim)
    table[:, 0::2] = torch.sin(position * div_term)
    table[:, 1::2] = torch.cos(position * div_term)
    return table


class ScaledSinusoidal(nn.Module):
    """gain · table[:S]; the table is a non-persistent buffer (never saved), the gain a learnable scalar."""

    def __init__(self, config: CrammedBertConfig) -> None:
        super().__init__()
        self.scale_factor = nn.Parameter(torch.full((1,), 1.0 / math.sqrt(config.hidden_size)))
        self.register_buffer("table", sinusoid_table(config.max_seq_length, config.hidden_size), persistent=False)

    def forward(self, seq_length: int) -> torch.Tensor:
        return self.scale_factor * self.table[:seq_length]


class Embedding(nn.Module):
    def __init__(self, config: CrammedBertConfig) -> None:
        super().__init__()
        self.word_embedding = nn.Embedding(config.vocab_size, config.hidden_size, padding_idx=config.pad_token_id)
        # Rotary-only models carry their positions in attention: no absolute embedding at all.
        self.pos_embedding = ScaledSinusoidal(config) if config.uses_sinusoid else None
        self.norm = nn.LayerNorm(config.hidden_size, eps=config.norm_eps)
        self.dropout = nn.Dropout(config.embedding_dropout)
        self.max_seq_length = config.max_seq_length

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        seq = input_ids.shape[1]
        if seq > self.max_seq_length:
            raise ValueError(f"input has {seq} tokens; this model takes at most max_seq_length={self.max_seq_length}")
        x = self.word_embedding(input_ids)
        if self.pos_embedding is not None:
            x = x + self.pos_embedding(seq)
        return self.dropout(self.norm(x))


def relu2(x: torch.Tensor) -> torch.Tensor:
    return F.relu(x).square()


ACTIVATIONS = {"gelu": F.gelu, "relu2": relu2, "silu": F.silu}


class GatedFFN(nn.Module):
    """dense_in → split in halves (x, gate) → x · act(gate) → dense_out; act is the exact erf GELU in the recipe.
    With `glu` off: dense_in → act → dense_out, which then reads all intermediate_size features."""

    def __init__(self, config: CrammedBertConfig) -> None:
        super().__init__()
        self.glu = config.glu
        self.act = ACTIVATIONS[config.activation]
        self.dense_in = nn.Linear(config.hidden_size, config.intermediate_size, bias=False)
        width = config.intermediate_size // 2 if config.glu else config.intermediate_size
        self.dense_out = nn.Linear(width, config.hidden_size, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.glu:
            return self.dense_out(self.act(self.dense_in(x)))
        x, gate = self.dense_in(x).chunk(2, dim=-1)
        return self.dense_out(x * self.act(gate))


class TransformerLayer(nn.Module):
    """Pre-LN: x + drop(attn(norm1(x))), then x + drop(ffn(norm2(x)))."""

    def __init__(self, config: CrammedBertConfig) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(config.hidden_size, eps=config.norm_eps)
        self.attn = SelfAttention(config)
        self.norm2 = nn.LayerNorm(config.hidden_size, eps=config.norm_eps)
        self.ffn = GatedFFN(config)
        self.dropout = nn.Dropout(config.hidden_dropout)
        if config.zero_init_residual:
            # The residual branches' output projections start at zero (modded-nanoGPT): each layer starts as the
            # identity. A flag on the Linear, because `_init_weights` visits only modules holding parameters.
            self.attn.dense.zero_init = True
            self.ffn.dense_out.zero_init = True

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        x = x + self.dropout(self.attn(self.norm1(x), mask))
        return x + self.dropout(self.ffn(self.norm2(x)))


class CrammedBertPreTrainedModel(PreTrainedModel):
    config_class = CrammedBertConfig
    config: CrammedBertConfig
    base_model_prefix = "encoder"
    main_input_name = "input_ids"
    _no_split_modules = ["TransformerLayer"]
    # The losses are means and `forward` takes no `num_items_in_batch`: without this the transformers Trainer,
    # seeing `**_`, would skip dividing by the gradient-accumulation steps (each step that many times too large).
    accepts_loss_kwargs = False

    def _init_weights(self, module: nn.Module) -> None:
        # Linear/Embedding N(0, init_std) (padding row zeroed), LayerNorm (1, 0): the base class reads init_std.
        super()._init_weights(module)
        if getattr(module, "zero_init", False):
            init.zeros_(module.weight)
        if isinstance(module, Rotary):
            cos, sin = rotary_tables(module.max_seq_length, module.head_size, module.base)
            init.copy_(module.cos, cos)
            init.copy_(module.sin, sin)
        if isinstance(module, ScaledSinusoidal):
            init.constant_(module.scale_factor, 1.0 / math.sqrt(self.config.hidden_size))
            # The table is a non-persistent buffer: rebuild it whenever HF materialises the model (meta init).
            init.copy_(module.table, sinusoid_table(self.config.max_seq_length, self.config.hidden_size))


class CrammedBertModel(CrammedBertPreTrainedModel):
    """The encoder: embedding → layers → final LayerNorm; returns the hidden states [B, S, hidden]."""

    def __init__(self, config: CrammedBertConfig) -> None:
        super().__init__(config)
        self.embedding = Embedding(config)
        self.layers = nn.ModuleList(TransformerLayer(config) for _ in range(config.num_layers))
        self.final_norm = nn.LayerNorm(config.hidden_size, eps=config.norm_eps)
        self.post_init()

    def get_input_embeddings(self) -> nn.Embedding:
        return self.embedding.word_embedding

    def set_input_embeddings(self, value: nn.Embedding) -> None:
        self.embedding.word_embedding = value

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                **_: object) -> BaseModelOutput:
        mask = padding_mask(attention_mask, self.config)
        x = self.embedding(input_ids)
        for layer in self.layers:
            x = layer(x, mask)
        return BaseModelOutput(last_hidden_state=self.final_norm(x))


class CrammedBertForMaskedLM(CrammedBertPreTrainedModel):
    """Encoder → prediction head (v1: bare bias-free Linear; v2: none) → bias-free decoder, tied to the word
    embedding unless `tie_word_embeddings` is off.

    Without labels `logits` are [B, S, vocab]. With labels (−100 = not predicted) and sparse prediction on, only
    the selected positions are decoded and `logits` is [num_selected, vocab]; the loss is the mean cross-entropy
    over the predicted positions either way.
    """

    _tied_weights_keys = {"decoder.weight": "encoder.embedding.word_embedding.weight"}

    def __init__(self, config: CrammedBertConfig) -> None:
        super().__init__(config)
        self.encoder = CrammedBertModel(config)
        if config.layout == "v1":
            self.prediction_head = nn.Linear(config.hidden_size, config.hidden_size, bias=False)
        self.decoder = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        # Set by training (train/step.py): run `dynamic` as `static` at this share, so the host never waits for
        # the masked count. Not a config field, so a saved model stays `dynamic`.
        self.fixed_prediction_share: float | None = None
        self.post_init()

    def get_output_embeddings(self) -> nn.Linear:
        return self.decoder

    def set_output_embeddings(self, value: nn.Linear) -> None:
        self.decoder = value

    def _decode(self, hidden: torch.Tensor) -> torch.Tensor:
        if self.config.layout == "v1":
            hidden = self.prediction_head(hidden)
        return self.decoder(hidden)

    def logits_at(self, input_ids: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        """Logits [len(positions), vocab] at the given flat positions of the [B, S] batch only: every masked
        position decoded, whatever `sparse_prediction` says (held-out evaluation), without the full [B, S, vocab]."""
        hidden = self.encoder(input_ids).last_hidden_state.flatten(0, 1)
        return self._decode(hidden.index_select(0, positions))

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                labels: torch.Tensor | None = None, **_: object) -> MaskedLMOutput:
        hidden = self.encoder(input_ids, attention_mask).last_hidden_state
        if labels is None:
            return MaskedLMOutput(logits=self._decode(hidden))
        hidden, labels = hidden.flatten(0, 1), labels.flatten()
        mode, share = self.config.sparse_prediction, self.config.sparse_rate
        if mode == "dynamic" and self.fixed_prediction_share is not None:
            mode, share = "static", self.fixed_prediction_share
        if mode == "dynamic":
            # Boolean indexing synchronises with the host (the count is data-dependent); `static` avoids that.
            keep = labels != IGNORE_INDEX
            hidden, labels = hidden[keep], labels[keep]
        elif mode == "static":
            # A fixed count, so shapes never change (torch.compile): masked positions sort first; if fewer are
            # masked the rest are unmasked rows whose −100 labels the loss ignores.
            count = max(1, round(share * labels.numel()))
            order = torch.argsort((labels != IGNORE_INDEX).to(torch.int8), descending=True, stable=True)[:count]
            hidden, labels = hidden.index_select(0, order), labels.index_select(0, order)
        logits = self._decode(hidden)
        loss = F.cross_entropy(logits.float(), labels, ignore_index=IGNORE_INDEX)
        if mode == "off":
            logits = logits.view(*input_ids.shape, -1)
        return MaskedLMOutput(loss=loss, logits=logits)


class CrammedBertForSequenceClassification(CrammedBertPreTrainedModel):
    """Encoder → pool (first position or masked mean) → Linear(hidden → head_dim) → Tanh → Dropout →
    Linear(head_dim → num_labels). One label = regression (MSE), else cross-entropy."""

    def __init__(self, config: CrammedBertConfig) -> None:
        super().__init__(config)
        self.num_labels = config.num_labels
        self.encoder = CrammedBertModel(config)
        self.pooler = Pooler(config)
        self.classifier = nn.Linear(config.classifier_head_dim, config.num_labels)
        self.post_init()

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                labels: torch.Tensor | None = None, **_: object) -> SequenceClassifierOutput:
        hidden = self.encoder(input_ids, attention_mask).last_hidden_state
        logits = self.classifier(self.pooler(hidden, attention_mask))
        loss = None
        if labels is not None:
            if self.num_labels == 1:
                loss = F.mse_loss(logits.view(-1).float(), labels.view(-1).float())
            else:
                loss = F.cross_entropy(logits.float().view(-1, self.num_labels), labels.view(-1))
        return SequenceClassifierOutput(loss=loss, logits=logits)


class Pooler(nn.Module):
    def __init__(self, config: CrammedBertConfig) -> None:
        super().__init__()
        self.mode = config.pooler
        self.dense = nn.Linear(config.hidden_size, config.classifier_head_dim)
        self.dropout = nn.Dropout(config.classifier_dropout)

    def forward(self, hidden: torch.Tensor, attention_mask: torch.Tensor | None) -> torch.Tensor:
        if self.mode == "zero_index":
            pooled = hidden[:, 0]
        elif attention_mask is None:
            pooled = hidden.mean(dim=1)
        else:
            weights = attention_mask.to(hidden.dtype).unsqueeze(-1)
            pooled = (hidden * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1.0)
        return self.dropout(torch.tanh(self.dense(pooled)))
