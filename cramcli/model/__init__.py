"""Crammed BERT: config, model classes and their registration with the transformers auto classes."""

from __future__ import annotations

from cramcli.model.config import CrammedBertConfig
from cramcli.model.modeling import (
    CrammedBertForMaskedLM,
    CrammedBertForSequenceClassification,
    CrammedBertModel,
)

__all__ = [
    "CrammedBertConfig",
    "CrammedBertForMaskedLM",
    "CrammedBertForSequenceClassification",
    "CrammedBertModel",
    "register",
]


def register() -> None:
    """Make `AutoConfig`/`AutoModel*.from_pretrained` recognise model_type "cram-bert" (idempotent)."""
    from transformers import (
        AutoConfig,
        AutoModel,
        AutoModelForMaskedLM,
        AutoModelForSequenceClassification,
    )

    AutoConfig.register(CrammedBertConfig.model_type, CrammedBertConfig, exist_ok=True)
    AutoModel.register(CrammedBertConfig, CrammedBertModel, exist_ok=True)
    AutoModelForMaskedLM.register(CrammedBertConfig, CrammedBertForMaskedLM, exist_ok=True)
    AutoModelForSequenceClassification.register(CrammedBertConfig, CrammedBertForSequenceClassification,
                                                exist_ok=True)


register()
