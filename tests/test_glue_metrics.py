"""GLUE metrics against hand-computed values, and the model card's median/average convention."""

from __future__ import annotations

import numpy as np
import pytest

from cramcli.glue.metrics import card_average, card_numbers, compute, median_and_range


def test_accuracy_f1_mcc_by_hand() -> None:
    labels = np.array([1, 1, 0, 0, 1])
    preds = np.array([1, 0, 0, 1, 1])
    # TP=2 FP=1 FN=1 TN=1: acc 3/5, F1 = 2·2/(2·2+1+1) = 2/3, MCC = (2·1−1·1)/sqrt(3·3·2·2) = 1/6
    m = compute("mrpc", preds, labels)
    assert m["accuracy"] == pytest.approx(0.6) and m["f1"] == pytest.approx(2 / 3)
    assert compute("cola", preds, labels)["matthews"] == pytest.approx(1 / 6)
    assert set(compute("rte", preds, labels)) == {"accuracy"}


def test_pearson_spearman_by_hand() -> None:
    m = compute("stsb", np.array([1.0, 2.0, 3.0, 4.0]), np.array([1.0, 2.0, 3.0, 5.0]))
    # Pearson: x̄=2.5, ȳ=2.75; Σdxdy=6.5, Σdx²=5, Σdy²=8.75 → 6.5/sqrt(43.75); ranks identical → Spearman 1
    assert m["pearson"] == pytest.approx(6.5 / 43.75**0.5)
    assert m["spearman"] == pytest.approx(1.0)
    assert compute("stsb", np.array([2.0, 2.0]), np.array([1.0, 3.0]))["pearson"] == 0.0


def test_card_convention_reproduces_78_6() -> None:
    # Legacy model card per-task numbers (recipe §7.1): the average of 9 numbers is 78.6.
    card = {"MNLI-m": 83.9, "MNLI-mm": 84.1, "QQP": 87.3, "QNLI": 89.5, "SST-2": 92.2, "CoLA": 44.5,
            "STS-B": 84.6, "MRPC": 87.5, "RTE": 53.8}
    avg, complete = card_average(card)
    assert complete and round(avg, 1) == 78.6
    partial, complete = card_average({"RTE": 50.0, "MRPC": 70.0})
    assert not complete and partial == 60.0


def test_card_numbers_and_median() -> None:
    trial = {"dev_matched": {"accuracy": 0.5}, "dev_mismatched": {"accuracy": 0.25}}
    assert card_numbers("mnli", trial) == {"MNLI-m": 50.0, "MNLI-mm": 25.0}
    assert card_numbers("mrpc", {"dev": {"accuracy": 0.7, "f1": 0.8}}) == {"MRPC": pytest.approx(80.0)}
    assert median_and_range([3.0, 1.0, 2.0, 10.0, 5.0]) == (3.0, 1.0, 10.0)
    assert median_and_range([1.0, 2.0]) == (1.5, 1.0, 2.0)
