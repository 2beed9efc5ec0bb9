"""Read GLUE: the original TSV folders, local HF-datasets/parquet exports, or the hub (`nyu-mll/glue`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from cramcli.glue.tasks import HF_SPLITS, Task
from cramcli.utils.errors import UsageError

Example = tuple[str, str | None, float]
"""(text_a, text_b or None, label id — or the score for regression)."""


@dataclass
class TaskData:
    train: list[Example]
    dev: dict[str, list[Example]]
    source: str
    files: dict[str, str] = field(default_factory=dict)


def read_tsv(path: Path, task: Task) -> list[Example]:
    """One original GLUE TSV, read as the originals are: quoting off, optional BOM, last row without newline."""
    try:
        text = path.read_bytes().decode("utf-8-sig")
    except OSError as exc:
        raise UsageError(f"{path}: cannot read ({exc.strerror})") from None
    except UnicodeDecodeError as exc:
        raise UsageError(f"{path}: not UTF-8 text (byte {exc.start})") from None
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    start = 0
    if task.header:
        if not lines:
            raise UsageError(f"{path}: empty file; expected a header line")
        names = lines[0].rstrip("\r").split("\t")
        wanted = [*task.text_columns, task.label_column]
        missing = [str(c) for c in wanted if c not in names]
        if missing:
            raise UsageError(f"{path}:1: header lacks column(s) {', '.join(missing)}; is this the {task.folder} file?")
        idx = [names.index(c) for c in wanted]  # type: ignore[arg-type]
        start = 1
    else:
        idx = [int(c) for c in (*task.text_columns, task.label_column)]
    need = max(idx) + 1
    out: list[Example] = []
    for lineno, raw in enumerate(lines[start:], start=start + 1):
        line = raw.rstrip("\r")
        if not line.strip():
            continue
        cols = line.split("\t")
        if len(cols) < need:
            raise UsageError(f"{path}:{lineno}: malformed row ({len(cols)} tab-separated columns, need {need})")
        texts = [cols[i] for i in idx[:-1]]
        out.append((texts[0], texts[1] if task.pair else None, _label(cols[idx[-1]], task, f"{path}:{lineno}")))
    return out


def _label(value: str, task: Task, where: str) -> float:
    value = value.strip()
    if task.labels is None:
        try:
            return float(value)
        except ValueError:
            raise UsageError(f"{where}: score {value!r} is not a number") from None
    if value not in task.labels:
        raise UsageError(f"{where}: label {value!r} is not one of {', '.join(task.labels)}")
    return float(task.labels.index(value))


def load_task(task: Task, glue_dir: Path | None) -> TaskData:
    """`glue_dir` holds the original folders (`RTE/train.tsv`) or HF exports (`rte/train*.parquet`); without it
    the hub is tried through `datasets`."""
    if glue_dir is None:
        return _load_hub(task)
    glue_dir = Path(glue_dir)
    if not glue_dir.is_dir():
        raise UsageError(f"--glue-dir {glue_dir}: not a folder; pass the folder that holds {task.folder}/ etc.")
    folder = _find(glue_dir, (task.folder, task.folder.lower(), task.name))
    if folder is not None and (folder / "train.tsv").exists():
        files = {"train": folder / "train.tsv", **{s: folder / f for s, f in task.dev_splits.items()}}
        for split, path in files.items():
            if not path.exists():
                raise UsageError(f"{path}: missing {task.folder} {split} file; the original GLUE layout has it")
        data = {split: read_tsv(path, task) for split, path in files.items()}
        train = data.pop("train")
        return TaskData(train, data, f"tsv:{folder}", {k: str(v) for k, v in files.items()})
    if folder is not None and _parquet(folder, "train"):
        return _load_parquet(task, folder)
    raise UsageError(
        f"--glue-dir {glue_dir}: no {task.folder}/train.tsv (original GLUE layout) nor {task.name}/train*.parquet"
        f" (HF export); put the {task.folder} files there or drop {task.name} from --tasks"
    )


def _find(root: Path, names: tuple[str, ...]) -> Path | None:
    for name in names:
        if (root / name).is_dir():
            return root / name
    return None


def _parquet(folder: Path, split: str) -> list[Path]:
    return sorted(folder.glob(f"{split}.parquet")) + sorted(folder.glob(f"{split}-*.parquet"))


def _load_parquet(task: Task, folder: Path) -> TaskData:
    import pyarrow.parquet as pq

    def read(split: str) -> list[Example]:
        files = _parquet(folder, split)
        if not files:
            raise UsageError(f"{folder}: no {split}*.parquet for {task.name}; export that split too")
        rows: list[dict] = []
        for f in files:
            rows.extend(pq.read_table(f).to_pylist())
        return _from_hf_rows(rows, task, str(folder / split))

    dev = {s: read(HF_SPLITS[s]) for s in task.dev_splits}
    return TaskData(read("train"), dev, f"parquet:{folder}")


def _from_hf_rows(rows: list[dict], task: Task, where: str) -> list[Example]:
    out: list[Example] = []
    for i, row in enumerate(rows):
        try:
            texts = [str(row[c]) for c in task.hf_columns]
            label = float(row["label"])
        except KeyError as exc:
            raise UsageError(f"{where} row {i}: missing column {exc}; expected {', '.join(task.hf_columns)}, label") from None
        if task.labels is not None and label not in range(task.num_labels):
            raise UsageError(f"{where} row {i}: label {label:g} outside 0..{task.num_labels - 1} (test split?)")
        out.append((texts[0], texts[1] if task.pair else None, label))
    return out


def _load_hub(task: Task) -> TaskData:
    hint = (f"no GLUE data for {task.name}: pass --glue-dir DIR with the original folders ({task.folder}/train.tsv,"
            f" {', '.join(task.dev_splits.values())}) or HF parquet exports ({task.name}/train*.parquet)")
    try:
        import datasets

        ds = datasets.load_dataset("nyu-mll/glue", task.name)
    except Exception as exc:  # offline, no cache, hub errors: all end in the same advice
        raise UsageError(f"{hint}; the hub (nyu-mll/glue) failed: {str(exc).splitlines()[0][:120]}") from None
    dev = {s: _from_hf_rows(list(ds[HF_SPLITS[s]]), task, f"hub:{HF_SPLITS[s]}") for s in task.dev_splits}
    return TaskData(_from_hf_rows(list(ds["train"]), task, "hub:train"), dev, "hub:nyu-mll/glue")
