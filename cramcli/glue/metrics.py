"""GLUE metrics (scikit-learn/scipy) and the model card's convention: one number per column, ×100, mean of 9."""

from __future__ import annotations

import statistics

import numpy as np

# The model card's columns: (column, task, eval split, metric).
CARD_COLUMNS: tuple[tuple[str, str, str, str], ...] = (
    ("MNLI-m", "mnli", "dev_matched", "accuracy"),
    ("MNLI-mm", "mnli", "dev_mismatched", "accuracy"),
    ("QQP", "qqp", "dev", "f1"),
    ("QNLI", "qnli", "dev", "accuracy"),
    ("SST-2", "sst2", "dev", "accuracy"),
    ("CoLA", "cola", "dev", "matthews"),
    ("STS-B", "stsb", "dev", "pearson"),
    ("MRPC", "mrpc", "dev", "f1"),
    ("RTE", "rte", "dev", "accuracy"),
)
WNLI_COLUMN = ("WNLI", "wnli", "dev", "accuracy")


def compute(task: str, preds: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """Metrics of one eval split: predicted class ids (or scores for STS-B) against the gold ones."""
    # Imported here: scipy and scikit-learn take a second to import, which `cram --help` must not pay.
    from scipy.stats import pearsonr, spearmanr
    from sklearn.metrics import accuracy_score, f1_score, matthews_corrcoef

    if task == "stsb":
        if len(preds) < 2 or np.std(preds) == 0 or np.std(labels) == 0:
            # A constant prediction has no correlation; report 0 rather than scipy's NaN warning.
            return {"pearson": 0.0, "spearman": 0.0}
        return {"pearson": float(pearsonr(preds, labels)[0]), "spearman": float(spearmanr(preds, labels)[0])}
    out = {"accuracy": float(accuracy_score(labels, preds))}
    if task == "cola":
        out["matthews"] = float(matthews_corrcoef(labels, preds))
    if task in ("mrpc", "qqp"):
        out["f1"] = float(f1_score(labels, preds, pos_label=1, zero_division=0.0))
    return out


def card_numbers(task: str, trial: dict[str, dict[str, float]]) -> dict[str, float]:
    """One trial's per-split metrics → the card's columns for that task (×100)."""
    return {col: 100.0 * trial[split][metric] for col, t, split, metric in (*CARD_COLUMNS, WNLI_COLUMN) if t == task}


def median_and_range(values: list[float]) -> tuple[float, float, float]:
    return statistics.median(values), min(values), max(values)


def card_average(columns: dict[str, float]) -> tuple[float, bool]:
    """Plain mean of the card's numbers present (MNLI counted twice, WNLI never); True when all 9 are there."""
    nums = [columns[col] for col, *_ in CARD_COLUMNS if col in columns]
    return (sum(nums) / len(nums) if nums else float("nan")), len(nums) == len(CARD_COLUMNS)
