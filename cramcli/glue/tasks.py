"""The GLUE task table: where each task's files are, which columns hold text and label, and its metric."""

from __future__ import annotations

from dataclasses import dataclass

from cramcli.utils.errors import UsageError


@dataclass(frozen=True)
class Task:
    name: str
    folder: str
    """Folder name in the original GLUE layout."""
    dev_splits: dict[str, str]
    """Evaluation split name → TSV file (MNLI has matched and mismatched)."""
    text_columns: tuple[str | int, ...]
    """Header names of the one or two text columns (or indices when the file has no header)."""
    label_column: str | int
    labels: tuple[str, ...] | None
    """Label values in the order of the class ids (HF `glue` order); None = regression."""
    header: bool = True
    hf_columns: tuple[str, ...] = ()
    """Text columns of the HF `nyu-mll/glue` export."""

    @property
    def pair(self) -> bool:
        return len(self.text_columns) == 2

    @property
    def num_labels(self) -> int:
        return 1 if self.labels is None else len(self.labels)


_NLI2 = ("entailment", "not_entailment")

TASKS: dict[str, Task] = {
    t.name: t
    for t in (
        Task("cola", "CoLA", {"dev": "dev.tsv"}, (3,), 1, ("0", "1"), header=False, hf_columns=("sentence",)),
        Task("sst2", "SST-2", {"dev": "dev.tsv"}, ("sentence",), "label", ("0", "1"), hf_columns=("sentence",)),
        Task("mrpc", "MRPC", {"dev": "dev.tsv"}, ("#1 String", "#2 String"), "Quality", ("0", "1"),
             hf_columns=("sentence1", "sentence2")),
        Task("qqp", "QQP", {"dev": "dev.tsv"}, ("question1", "question2"), "is_duplicate", ("0", "1"),
             hf_columns=("question1", "question2")),
        Task("stsb", "STS-B", {"dev": "dev.tsv"}, ("sentence1", "sentence2"), "score", None,
             hf_columns=("sentence1", "sentence2")),
        Task("mnli", "MNLI", {"dev_matched": "dev_matched.tsv", "dev_mismatched": "dev_mismatched.tsv"},
             ("sentence1", "sentence2"), "gold_label", ("entailment", "neutral", "contradiction"),
             hf_columns=("premise", "hypothesis")),
        Task("qnli", "QNLI", {"dev": "dev.tsv"}, ("question", "sentence"), "label", _NLI2,
             hf_columns=("question", "sentence")),
        Task("rte", "RTE", {"dev": "dev.tsv"}, ("sentence1", "sentence2"), "label", _NLI2,
             hf_columns=("sentence1", "sentence2")),
        Task("wnli", "WNLI", {"dev": "dev.tsv"}, ("sentence1", "sentence2"), "label", ("0", "1"),
             hf_columns=("sentence1", "sentence2")),
    )
}

ORIGINAL_ORDER = ("cola", "mnli", "mrpc", "qnli", "qqp", "rte", "sst2", "stsb", "wnli")
"""The order the original's `eval.py` fine-tuned the tasks in (its GLUE config's task list)."""

HF_SPLITS = {"dev": "validation", "dev_matched": "validation_matched", "dev_mismatched": "validation_mismatched"}


def parse_tasks(text: str | None, default: list[str]) -> list[Task]:
    """`--tasks rte,mrpc` (case-insensitive, `sst-2`/`sts-b` accepted) → task specs; unknown names → UsageError."""
    names = default if not text else [n.strip().lower().replace("-", "") for n in text.split(",") if n.strip()]
    unknown = [n for n in names if n not in TASKS]
    if unknown or not names:
        raise UsageError(f"--tasks: unknown task {', '.join(unknown) or '(none)'}; choose from {', '.join(TASKS)}")
    return [TASKS[n] for n in dict.fromkeys(names)]
