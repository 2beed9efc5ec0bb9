"""Budgets: the JSON files in `budgets/` that fix everything a stage does, validated by pydantic.

Two modules, one concern each: `models.py` (the four budget models and their fields' documentation) and
`files.py` (presets and paths, reading and validating, flag overrides with provenance, the JSON Schema). Both are
re-exported here, so callers write `from cramcli import budgets` and `budgets.TrainBudget`/`budgets.resolve(...)`.
"""

from __future__ import annotations

from cramcli.budgets.files import (
    Resolved,
    budget_hash,
    budgets_dir,
    file_label,
    flatten,
    format_error,
    json_schema,
    label,
    load,
    parse,
    preset_names,
    resolve,
    resolve_path,
)
from cramcli.budgets.models import (
    GLUE_TASKS,
    KINDS,
    MODELS,
    ArchBudget,
    ClassifierBudget,
    DataBudget,
    DedupBudget,
    FilterBudget,
    GlueBudget,
    MaskingBudget,
    MuonBudget,
    NormalizationBudget,
    OptimizerBudget,
    ScheduleBudget,
    TokenizerBudget,
    TrainBudget,
)

__all__ = [
    "GLUE_TASKS", "KINDS", "MODELS", "ArchBudget", "ClassifierBudget", "DataBudget", "DedupBudget", "FilterBudget",
    "GlueBudget", "MaskingBudget", "MuonBudget", "NormalizationBudget", "OptimizerBudget", "Resolved", "ScheduleBudget",
    "TokenizerBudget", "TrainBudget", "budget_hash", "budgets_dir", "file_label", "flatten", "format_error",
    "json_schema", "label", "load", "parse", "preset_names", "resolve", "resolve_path",
]
