"""Crammed BERT: config, model classes and their registration with the transformers auto classes."""

from __future__ import annotations

from cramcli.model.config import CrammedBertConfig
from cramcli.model.heads import (
    CrammedBertForMultipleChoice,
    CrammedBertForQuestionAnswering,
    CrammedBertForTokenClassification,
)
from cramcli.model.modeling import (
    CrammedBertForMaskedLM,
    CrammedBertForSequenceClassification,
    CrammedBertModel,
)

__all__ = [
    "CrammedBertConfig",
    "CrammedBertForMaskedLM",
    "CrammedBertForMultipleChoice",
    "CrammedBertForQuestionAnswering",
    "CrammedBertForSequenceClassification",
    "CrammedBertForTokenClassification",
    "CrammedBertModel",
    "register",
]


def register() -> None:
    """Make `AutoConfig`/`AutoModel*.from_pretrained` recognise model_type "cram-bert" (idempotent)."""
    from transformers import (
        AutoConfig,
        AutoModel,
        AutoModelForMaskedLM,
        AutoModelForMultipleChoice,
        AutoModelForQuestionAnswering,
        AutoModelForSequenceClassification,
        AutoModelForTokenClassification,
    )

    AutoConfig.register(CrammedBertConfig.model_type, CrammedBertConfig, exist_ok=True)
    AutoModel.register(CrammedBertConfig, CrammedBertModel, exist_ok=True)
    AutoModelForMaskedLM.register(CrammedBertConfig, CrammedBertForMaskedLM, exist_ok=True)
    AutoModelForSequenceClassification.register(CrammedBertConfig, CrammedBertForSequenceClassification,
                                                exist_ok=True)
    AutoModelForTokenClassification.register(CrammedBertConfig, CrammedBertForTokenClassification, exist_ok=True)
    AutoModelForQuestionAnswering.register(CrammedBertConfig, CrammedBertForQuestionAnswering, exist_ok=True)
    AutoModelForMultipleChoice.register(CrammedBertConfig, CrammedBertForMultipleChoice, exist_ok=True)


register()
