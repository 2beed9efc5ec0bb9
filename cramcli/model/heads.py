"""Task heads beyond GLUE's: token classification, extractive question answering, multiple choice.

Each follows the transformers convention of BERT's head of the same name (argument names, label layout, output
class), so the Auto classes, the `token-classification`/`question-answering` pipelines and the `Trainer` treat
a cram checkpoint like any other encoder:
- token classification: encoder → Dropout(classifier_dropout) → Linear(hidden → num_labels) at every position;
  `labels` [B, S] with −100 at positions that take no loss (padding, special tokens, non-first word pieces);
- question answering: encoder → Dropout(classifier_dropout) → Linear(hidden → 2) = start and end logits [B, S];
  `start_positions`/`end_positions` [B] (token indices; one past the input takes no loss), the loss is the
  mean of the start and the end cross-entropy;
- multiple choice: inputs [B, choices, S] are run as B·choices sequences → the sequence-classification pooler
  (the arch budget's `pooler`, `head_dim`, Tanh, `classifier_dropout`) → Linear(head_dim → 1) → logits
  [B, choices]; `labels` [B] is the index of the right choice.
The dropout, pooler and head width are the arch budget's `classifier` settings, as for GLUE; the attention
backend is the config's, like every other cram model. Losses are computed in fp32 whatever the model's dtype.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from transformers.modeling_outputs import (
    MultipleChoiceModelOutput,
    QuestionAnsweringModelOutput,
    TokenClassifierOutput,
)

from cramcli.model.config import CrammedBertConfig
from cramcli.model.modeling import IGNORE_INDEX, CrammedBertModel, CrammedBertPreTrainedModel, Pooler


class CrammedBertForTokenClassification(CrammedBertPreTrainedModel):
    """Per-token labels (NER, POS tagging); see the module docstring."""

    def __init__(self, config: CrammedBertConfig) -> None:
        super().__init__(config)
        self.num_labels = config.num_labels
        self.encoder = CrammedBertModel(config)
        self.dropout = nn.Dropout(config.classifier_dropout)
        self.classifier = nn.Linear(config.hidden_size, config.num_labels)
        self.post_init()

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                labels: torch.Tensor | None = None, **_: object) -> TokenClassifierOutput:
        hidden = self.encoder(input_ids, attention_mask).last_hidden_state
        logits = self.classifier(self.dropout(hidden))
        loss = None
        if labels is not None:
            loss = F.cross_entropy(logits.float().view(-1, self.num_labels), labels.view(-1),
                                   ignore_index=IGNORE_INDEX)
        return TokenClassifierOutput(loss=loss, logits=logits)


class CrammedBertForQuestionAnswering(CrammedBertPreTrainedModel):
    """Extractive QA (SQuAD): start and end logits over the tokens; see the module docstring."""

    def __init__(self, config: CrammedBertConfig) -> None:
        super().__init__(config)
        self.encoder = CrammedBertModel(config)
        self.dropout = nn.Dropout(config.classifier_dropout)
        self.qa_outputs = nn.Linear(config.hidden_size, 2)
        self.post_init()

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                start_positions: torch.Tensor | None = None, end_positions: torch.Tensor | None = None,
                **_: object) -> QuestionAnsweringModelOutput:
        hidden = self.encoder(input_ids, attention_mask).last_hidden_state
        start_logits, end_logits = self.qa_outputs(self.dropout(hidden)).unbind(dim=-1)
        loss = None
        if start_positions is not None and end_positions is not None:
            # A position past the input (the answer was truncated away) is clamped to S and ignored: BERT's rule.
            seq = start_logits.shape[1]
            starts, ends = (p.view(-1).clamp(0, seq) for p in (start_positions, end_positions))
            loss = (F.cross_entropy(start_logits.float(), starts, ignore_index=seq)
                    + F.cross_entropy(end_logits.float(), ends, ignore_index=seq)) / 2
        return QuestionAnsweringModelOutput(loss=loss, start_logits=start_logits.contiguous(),
                                            end_logits=end_logits.contiguous())


class CrammedBertForMultipleChoice(CrammedBertPreTrainedModel):
    """One score per choice (SWAG, HellaSwag): inputs [B, choices, S] → logits [B, choices]."""

    def __init__(self, config: CrammedBertConfig) -> None:
        super().__init__(config)
        self.encoder = CrammedBertModel(config)
        self.pooler = Pooler(config)
        self.classifier = nn.Linear(config.classifier_head_dim, 1)
        self.post_init()

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                labels: torch.Tensor | None = None, **_: object) -> MultipleChoiceModelOutput:
        if input_ids.dim() != 3:
            raise ValueError("multiple choice takes input_ids [batch, choices, seq]; "
                             f"got shape {list(input_ids.shape)}")
        batch, choices, seq = input_ids.shape
        flat_mask = None if attention_mask is None else attention_mask.reshape(batch * choices, seq)
        hidden = self.encoder(input_ids.reshape(batch * choices, seq), flat_mask).last_hidden_state
        logits = self.classifier(self.pooler(hidden, flat_mask)).view(batch, choices)
        loss = None if labels is None else F.cross_entropy(logits.float(), labels.view(-1))
        return MultipleChoiceModelOutput(loss=loss, logits=logits)


def probe_logits(model: nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """Every head's outputs for a [B, S] batch as one tensor, for comparing two builds of a model (the parity
    check of `cram convert`): [B, S, ...] per token, [B, ...] per sequence. Multiple choice scores each row as
    a single choice; question answering stacks start and end logits → [B, S, 2]."""
    if isinstance(model, CrammedBertForMultipleChoice):
        return model(input_ids=input_ids[:, None], attention_mask=attention_mask[:, None]).logits
    out = model(input_ids=input_ids, attention_mask=attention_mask)
    if isinstance(out, QuestionAnsweringModelOutput):
        return torch.stack((out.start_logits, out.end_logits), dim=-1)
    return out.logits if "logits" in out else out.last_hidden_state
