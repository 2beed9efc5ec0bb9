"""What cram recorded about a checkpoint, found for its model card: the pretraining run that made the weights
(also through a `cram convert` copy), the GLUE results of exactly these weights (by their hash), the charts and
the parameter count. Read-only; `publish/write.py` writes the card."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from cramcli.utils.digest import weights_sha256
from cramcli.utils.errors import UsageError
from cramcli.utils.jsonfile import read_object, read_rows


def cram_checkpoint(given: Path) -> tuple[Path, dict[str, Any]]:
    """The cram checkpoint `given` means (a run folder → its final/) and its config.json; an original cramming
    checkpoint is refused with the command that imports it."""
    from cramcli.model.checkpoint import CheckpointError, find_checkpoint

    try:
        folder = find_checkpoint(given, cram_only=True)
    except CheckpointError as exc:
        raise UsageError(str(exc)) from None
    return folder, read_object(folder / "config.json")


def find_run(given: Path, folder: Path, digest: str | None, depth: int = 0) -> Path | None:
    """The pretrain run folder whose final/ holds these weights: the folder given, the parent of final/, or,
    for a `cram convert` output (its report.json names the source), the source's run when the weights match."""
    for candidate in (given, folder.parent if folder.name == "final" else None):
        if candidate is not None and (candidate / "run-config.json").is_file() and (candidate / "report.json").is_file():
            return candidate
    converted = folder / "report.json"
    if depth < 3 and converted.is_file():
        source = read_object(converted).get("source")
        if isinstance(source, str) and "target_attention" in read_object(converted):
            from cramcli.model.checkpoint import resolve

            src = resolve(Path(source))
            if src.is_dir() and src.resolve() != folder.resolve() and weights_sha256(src) == digest:
                return find_run(Path(source), src, digest, depth + 1)
    return None


def glue_results(glue: Path | None, given: Path, folder: Path, run_dir: Path | None) -> Path | None:
    if glue is not None:
        path = Path(glue) / "results.json" if Path(glue).is_dir() else Path(glue)
        if not path.is_file():
            raise UsageError(f"--glue {glue}: no GLUE results.json there; pass what `cram glue` wrote (OUT/results.json)")
        return path
    # `cram glue --model M` writes to M/glue by default, M being the run folder or the checkpoint.
    for base in (given, folder, run_dir):
        if base is not None and (base / "glue" / "results.json").is_file():
            return base / "glue" / "results.json"
    return None


def check_glue_is_for(results: dict[str, Any], path: Path, folder: Path, digest: str | None) -> None:
    """Refuse GLUE numbers of other weights: by weight digest when recorded, else by the checkpoint's path."""
    theirs = results.get("checkpoint") or results.get("checkpoint_path")
    if not isinstance(results.get("tasks"), dict) or theirs is None:
        raise UsageError(f"{path}: not a `cram glue` results.json (no checkpoint/tasks); pass OUT/results.json")
    if results.get("weights_sha256"):
        same = results["weights_sha256"] == digest
    else:
        same = Path(results.get("checkpoint_path") or theirs).resolve() == folder.resolve()
    if not same:
        raise UsageError(f"{path}: GLUE results of checkpoint {theirs}, not of {folder} (other weights); pass the "
                         f"results of this checkpoint with --glue, or run `cram glue --model {folder}`")


def training_png(run_dir: Path | None) -> bytes | None:
    """The run's own chart; drawn from metrics.jsonl for a run that predates the PNG."""
    if run_dir is None:
        return None
    if (run_dir / "training.png").is_file():
        return (run_dir / "training.png").read_bytes()
    rows = read_rows(run_dir / "metrics.jsonl")
    if not rows:
        return None
    from cramcli.utils.plots import training_png as draw

    return draw(rows, f"cram pretrain — {run_dir.name}")


def glue_png(glue_file: Path, results: dict[str, Any]) -> bytes:
    if (glue_file.parent / "glue.png").is_file():
        return (glue_file.parent / "glue.png").read_bytes()
    from cramcli.glue.metrics import CARD_COLUMNS, WNLI_COLUMN
    from cramcli.utils.plots import glue_png as draw

    return draw(results["tasks"], [c for c, *_ in (*CARD_COLUMNS, WNLI_COLUMN)],
                    f"GLUE dev, median of {results.get('trials')} trial(s), {results.get('protocol')} protocol")


def num_parameters(folder: Path) -> int:
    """Counted from the safetensors header (shapes only, no tensor is read); the tied decoder is stored once."""
    from safetensors import safe_open

    from cramcli.model.checkpoint import WEIGHTS

    with safe_open(str(folder / WEIGHTS), framework="pt") as handle:
        total = 0
        for key in handle.keys():  # noqa: SIM118 (safe_open is not a mapping)
            count = 1
            for dim in handle.get_slice(key).get_shape():
                count *= dim
            total += count
    return total
