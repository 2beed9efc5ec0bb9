"""Pre-tokenized corpora: token rows made elsewhere (the original cramming code's ready-made corpora), copied
as they are into cram's prepared format. No re-tokenizing and no re-ordering; the tokenizer comes with the
corpus and its tokenizer.json is copied byte for byte, so every special id is the corpus's own.

Detected from an `input_ids` column, in three layouts:
- `hf:OWNER/NAME` on the HF hub (e.g. `JonasGeiping/the_pile_WordPiecex32768_2efdb9d060d1ae95faf952ec1a50f020`):
  rows streamed with `datasets` (`streaming=True`), the tokenizer from the dataset repo's `tokenizer/` folder
  (only that folder is downloaded, with huggingface_hub; the rows are then read at the same revision);
- that layout downloaded to a folder: `data/*.parquet` (every `*.parquet` below the folder, sorted) + `tokenizer/`;
- the original's processed-corpus folder: `datasets.save_to_disk` output (`state.json`, `data-*.arrow`) with
  `tokenizer/` and `model_config.json` (the data config it was built with) beside it.
Rows are read in Arrow batches, checked (length = the budget's seq_length, ids inside the tokenizer's
vocabulary) and written straight into shards, so memory stays flat; reading stops at the budget's max_rows.

The held-out split: the corpus's own `validation` split when it has one (a hub split, a DatasetDict's
`validation/`, parquet files named `validation*`), else blocks of consecutive rows chosen by the seed; rows carry
no document boundaries, so the row on each side of a block, which may share a document with it, is dropped.
"""

from __future__ import annotations

import json
import re
import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from tokenizers import Tokenizer

from cramcli.budgets import DataBudget
from cramcli.data import packing, prepared
from cramcli.data.tokenizer import TOKENIZER_FILES, special_ids, tokenizer_hash
from cramcli.utils.errors import RunError, UsageError

CODE_VERSION = 2
"""Bump when a code change alters what a given corpus and budget produce (it is part of the content hash)."""
ROW_BATCH = 8192
_HUB_HINT = ("or download the dataset repo (data/*.parquet and tokenizer/) and pass the folder: "
             "--source ./folder")

Progress = Callable[[str, int | None], Callable[[int], None]]


class Corpus:
    """A pre-tokenized corpus: batches of `input_ids` rows plus the folder holding its tokenizer."""

    spec: str
    layout: str

    def tokenizer_dir(self) -> Path:
        raise NotImplementedError

    def identity(self) -> dict[str, Any]:
        raise NotImplementedError

    def batches(self) -> Iterator[tuple[str, pa.Array]]:
        """(where, an `input_ids` column chunk): `where` names the file (or hub dataset) for error messages."""
        raise NotImplementedError

    def num_rows(self) -> int | None:
        return None

    def location(self) -> str:
        """What error messages name for the corpus as a whole."""
        return self.spec

    def config_file(self) -> Path | None:
        """The original's `model_config.json` (its data config), when the layout has one."""
        return None

    def slug(self) -> str:
        return re.sub(r"[^A-Za-z0-9._-]+", "-", self.spec.removeprefix("hf:")).strip("-.")[-40:] or "corpus"

    def validation_split(self) -> Corpus | None:
        """The corpus's own validation split, when it has one (and is not being read as the training split)."""
        return None


def detect(spec: str, split: str = "train") -> Corpus | None:
    """The pre-tokenized corpus at `spec`, or None when `spec` is raw text (or nothing: open_source says so)."""
    if spec == "embedded":
        return None
    if spec.startswith("hf:"):
        name, _, config = spec[3:].partition(":")
        return HubCorpus.probe(spec, name, config or None, split) if name else None
    path = Path(spec).expanduser()
    if path.is_file():
        if path.name.endswith(".parquet") and "input_ids" in _parquet_columns(path):
            raise UsageError(f"--source {spec}: a pre-tokenized parquet file; pass the folder that holds it and"
                             " its tokenizer/ (the hub layout: data/*.parquet + tokenizer/)")
        return None
    if not path.is_dir():
        return None
    saved = _saved_dataset_dir(path, split)
    if saved is not None:
        files = _arrow_files(saved)
        if files and "input_ids" in _arrow_columns(files[0]):
            own = path / "validation"
            held = (LocalCorpus(spec, path, "save_to_disk", _arrow_files(own))
                    if saved != own and (path / "dataset_dict.json").is_file() and (own / "state.json").is_file()
                    else None)
            return LocalCorpus(spec, path, "save_to_disk", files, held)
        return None
    parquet = sorted(p for p in path.rglob("*.parquet")
                     if not any(part.startswith(".") or part == "tokenizer" for part in p.relative_to(path).parts))
    held = [p for p in parquet if _is_validation(p.relative_to(path))]
    train = [p for p in parquet if p not in held]
    if train and "input_ids" in _parquet_columns(train[0]):
        return LocalCorpus(spec, path, "parquet", train, LocalCorpus(spec, path, "parquet", held) if held else None)
    return None


def _is_validation(relative: Path) -> bool:
    """A parquet file of the validation split in the hub layout: `validation-*.parquet` or under `validation/`."""
    return any(part.startswith("validation") for part in relative.parts)


# ----------------------------------------------------------------------------------------------------------
# layouts


class LocalCorpus(Corpus):
    """`data/*.parquet` + `tokenizer/`, or `save_to_disk` output + `tokenizer/` + `model_config.json`."""

    def __init__(self, spec: str, root: Path, layout: str, files: list[Path], validation: Corpus | None = None) -> None:
        self.spec, self.root, self.layout, self.files, self._validation = spec, root, layout, files, validation

    def validation_split(self) -> Corpus | None:
        return self._validation

    def slug(self) -> str:
        return re.sub(r"[^A-Za-z0-9._-]+", "-", self.root.resolve().name).strip("-.")[-40:] or "corpus"

    def tokenizer_dir(self) -> Path:
        return self.root / "tokenizer"

    def location(self) -> str:
        return str(self.root)

    def config_file(self) -> Path | None:
        file = self.root / "model_config.json"
        return file if file.is_file() else None

    def identity(self) -> dict[str, Any]:
        files = [[str(f.resolve()), f.stat().st_size, f.stat().st_mtime_ns] for f in self.files]
        own = {"validation": self._validation.identity()} if self._validation is not None else {}
        return {"kind": f"pretokenized-{self.layout}", "files": files, **own}

    def num_rows(self) -> int | None:
        if self.layout != "parquet":
            # Arrow stream files carry no row count; memory-mapped, counting reads only the batch headers.
            total = 0
            for file in self.files:
                with pa.memory_map(str(file)) as handle:
                    total += sum(batch.num_rows for batch in pa.ipc.open_stream(handle))
            return total
        import pyarrow.parquet as pq

        return sum(pq.ParquetFile(f).metadata.num_rows for f in self.files)

    def batches(self) -> Iterator[tuple[str, pa.Array]]:
        read = self._parquet if self.layout == "parquet" else self._arrow
        for file in self.files:
            try:
                for column in read(file):
                    yield str(file), column
            except (OSError, pa.ArrowException) as exc:
                raise UsageError(f"{file}: cannot read ({_first_line(exc)}); the corpus file is damaged,"
                                 " fetch it again") from None

    @staticmethod
    def _parquet(file: Path) -> Iterator[pa.Array]:
        import pyarrow.parquet as pq

        handle = pq.ParquetFile(file)
        if "input_ids" not in handle.schema_arrow.names:
            raise UsageError(f"{file}: no input_ids column (columns: {', '.join(handle.schema_arrow.names)});"
                             " every parquet file of a pre-tokenized corpus needs one")
        for batch in handle.iter_batches(batch_size=ROW_BATCH, columns=["input_ids"]):
            yield batch.column(0)

    @staticmethod
    def _arrow(file: Path) -> Iterator[pa.Array]:
        with pa.OSFile(str(file)) as handle:  # read, not memory-mapped: each batch is freed after use
            reader = pa.ipc.open_stream(handle)
            index = reader.schema.get_field_index("input_ids")
            if index < 0:
                raise UsageError(f"{file}: no input_ids column (columns: {', '.join(reader.schema.names)})")
            for batch in reader:
                yield batch.column(index)


class HubCorpus(Corpus):
    """A pre-tokenized HF hub dataset, streamed; its tokenizer sits in the dataset repo's `tokenizer/`."""

    layout = "hub"

    def __init__(self, spec: str, name: str, config: str | None, split: str, num_rows: int | None,
                 splits: dict[str, int | None] | None = None) -> None:
        self.spec, self.name, self.config, self.split, self._num_rows = spec, name, config, split, num_rows
        self.splits = splits or {}
        self.revision: str | None = None
        self._tokenizer_dir: Path | None = None

    def validation_split(self) -> Corpus | None:
        if self.split == "validation" or "validation" not in self.splits:
            return None
        other = HubCorpus(self.spec, self.name, self.config, "validation", self.splits["validation"])
        other.revision, other._tokenizer_dir = self.revision, self._tokenizer_dir
        return other

    @classmethod
    def probe(cls, spec: str, name: str, config: str | None, split: str) -> HubCorpus | None:
        """Open the stream and look at its columns (the dataset card's features, else the first row)."""
        dataset = _open_hub(spec, name, config, split, None)
        if dataset.features is not None:
            columns = list(dataset.features)
        else:
            columns = list(next(iter(_guarded(dataset.take(1), spec)), {}))
        if "input_ids" not in columns:
            return None
        splits = getattr(dataset.info, "splits", None) or {}
        sizes = {str(key): getattr(value, "num_examples", None) or None for key, value in splits.items()} \
            if hasattr(splits, "items") else {}
        return cls(spec, name, config, split, sizes.get(split), sizes)

    def tokenizer_dir(self) -> Path:
        if self._tokenizer_dir is None:
            try:
                from huggingface_hub import snapshot_download

                root = Path(snapshot_download(self.name, repo_type="dataset", allow_patterns=["tokenizer/*"]))
            except Exception as exc:  # offline, gated, unknown repo: many exception types
                raise RunError(f"--source {self.spec}: cannot download its tokenizer/ folder"
                               f" ({_first_line(exc)}); {_HUB_HINT}") from None
            # snapshot_download answers .../snapshots/<commit>: read the rows at that same commit.
            self.revision = root.name if root.parent.name == "snapshots" else None
            self._tokenizer_dir = root / "tokenizer"
        return self._tokenizer_dir

    def identity(self) -> dict[str, Any]:
        self.tokenizer_dir()
        return {"kind": "pretokenized-hub", "name": self.name, "config": self.config, "split": self.split,
                "revision": self.revision}

    def num_rows(self) -> int | None:
        return self._num_rows

    def batches(self) -> Iterator[tuple[str, pa.Array]]:
        self.tokenizer_dir()
        dataset = _open_hub(self.spec, self.name, self.config, self.split, self.revision)
        tables = dataset.select_columns(["input_ids"]).with_format("arrow").iter(batch_size=ROW_BATCH)
        for table in _guarded(tables, self.spec):
            yield self.spec, table.column("input_ids")


def _open_hub(spec: str, name: str, config: str | None, split: str, revision: str | None) -> Any:
    try:
        import datasets
        from huggingface_hub.utils import logging as hub_logging

        hub_logging.set_verbosity_error()
        return datasets.load_dataset(name, config, split=split, streaming=True, revision=revision)
    except Exception as exc:  # datasets raises many types (ConnectionError, DatasetNotFoundError, ...)
        from cramcli.data.sources import LOCAL_HINT

        raise RunError(f"--source {spec}: cannot open the HF hub dataset ({_first_line(exc)}); {LOCAL_HINT}") from None


def _guarded(items: Any, spec: str) -> Iterator[Any]:
    """Iterate a hub stream, turning a network failure midway into one line."""
    iterator = iter(items)
    while True:
        try:
            item = next(iterator)
        except StopIteration:
            return
        except Exception as exc:
            raise RunError(f"--source {spec}: reading the stream failed ({_first_line(exc)}); {_HUB_HINT}") from None
        yield item


def _saved_dataset_dir(path: Path, split: str) -> Path | None:
    """The `save_to_disk` folder of a Dataset (`state.json`), or of `split` inside a DatasetDict."""
    if (path / "state.json").is_file():
        return path
    if (path / "dataset_dict.json").is_file():
        if not (path / split / "state.json").is_file():
            raise UsageError(f"{path}: a saved DatasetDict without split {split!r}; set split in the data budget")
        return path / split
    return None


def _arrow_files(folder: Path) -> list[Path]:
    state = folder / "state.json"
    try:
        names = [entry["filename"] for entry in json.loads(state.read_text())["_data_files"]]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise UsageError(f"{state}: not a datasets save_to_disk state file ({exc}); save the corpus again") from None
    files = [folder / name for name in names]
    for file in files:
        if not file.is_file():
            raise UsageError(f"{file}: listed in {state} but missing; copy the whole corpus folder again")
    return files


def _arrow_columns(file: Path) -> list[str]:
    try:
        with pa.OSFile(str(file)) as handle:
            return list(pa.ipc.open_stream(handle).schema.names)
    except (OSError, pa.ArrowException) as exc:
        raise UsageError(f"{file}: cannot read as an Arrow stream ({_first_line(exc)})") from None


def _parquet_columns(file: Path) -> list[str]:
    import pyarrow.parquet as pq

    try:
        return list(pq.read_schema(file).names)
    except (OSError, pa.ArrowException) as exc:
        raise UsageError(f"{file}: cannot read as parquet ({_first_line(exc)})") from None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0][:200]}" if text else type(exc).__name__


# ----------------------------------------------------------------------------------------------------------
# tokenizer


def load_corpus_tokenizer(corpus: Corpus) -> tuple[Tokenizer, Path]:
    """The corpus's own tokenizer (special ids as it has them, not cram's fixed ones) and its file."""
    folder = corpus.tokenizer_dir()
    file = folder / "tokenizer.json"
    if not file.is_file():
        raise UsageError(f"{corpus.location()}: a pre-tokenized corpus without its tokenizer (no {file}); put the tokenizer"
                         f" files the corpus was made with (tokenizer.json) into {folder}/")
    try:
        tok = Tokenizer.from_file(str(file))
    except Exception as exc:  # the Rust loader raises plain Exceptions with a serde message
        raise UsageError(f"{file}: not a valid tokenizer.json ({str(exc).splitlines()[0]})") from None
    return tok, file


# ----------------------------------------------------------------------------------------------------------
# copying


def content_hash(budget: DataBudget, identity: dict[str, Any], tok_hash: str) -> str:
    """What determines the copied rows: the corpus, its tokenizer, row length and row cap, the held-out split's
    settings, this code's version."""
    return prepared.content_hash(CODE_VERSION, {"source": identity, "tokenizer": tok_hash,
                                                "seq_length": budget.seq_length, "max_rows": budget.max_rows,
                                                "validation": budget.validation.model_dump(mode="json"),
                                                "seed": budget.seed})


def check_config(corpus: Corpus, budget: DataBudget, tok: Tokenizer, tok_file: Path) -> dict[str, Any] | None:
    """The original's model_config.json, checked against the budget and the tokenizer (before any row is read)."""
    file = corpus.config_file()
    if file is None:
        return None
    try:
        config = json.loads(file.read_text())
    except (OSError, ValueError) as exc:
        raise UsageError(f"{file}: unreadable ({exc}); copy it again with the corpus") from None
    if not isinstance(config, dict):
        raise UsageError(f"{file}: not a JSON object (the original writes its data config here)")
    seq = config.get("seq_length")
    if isinstance(seq, int) and seq != budget.seq_length:
        raise UsageError(f"{file}: the corpus was built with seq_length {seq}, the data budget says"
                         f" {budget.seq_length}; set seq_length to {seq} in the data budget")
    vocab = config.get("vocab_size")
    if isinstance(vocab, int) and vocab != tok.get_vocab_size():
        raise UsageError(f"{tok_file}: {tok.get_vocab_size()} tokens, but {file} says vocab_size {vocab};"
                         f" put the tokenizer the corpus was built with into {tok_file.parent}/")
    return config


def copy_rows(
    corpus: Corpus, budget: DataBudget, tok: Tokenizer, workdir: Path, progress: Progress,
    warn: Callable[[str], object] | None = None,
) -> tuple[list[dict[str, Any]], str, dict[str, Any]]:
    """Check and copy rows into shards until the corpus or max_rows ends; returns shards, data hash, stats. Held-out
    blocks (see `heldout_blocks`) and the rows beside them are left out of the shards (`stats["heldout"]`)."""
    vocab_size = tok.get_vocab_size()
    dtype = packing.token_dtype(vocab_size)
    total = corpus.num_rows()
    advance = progress("copy token rows", min(total, budget.max_rows) if total is not None else budget.max_rows)
    expected = min(total, budget.max_rows) if total is not None else None
    writer = packing.ShardWriter(workdir, advance, expected_rows=expected, warn=warn)
    v = budget.validation
    own = corpus.validation_split() if v.share > 0 and v.max_rows > 0 else None
    blocks = None if own is not None or v.share == 0 or v.max_rows == 0 else \
        heldout_blocks(min(total or budget.max_rows, budget.max_rows), v.share, v.max_rows, budget.seed)
    held = packing.ShardWriter(workdir, prefix="heldout")
    held_rows = guard_rows = 0
    dot = tok.token_to_id(".")
    ends = _SentenceEnds()
    written = read = 0
    for where, column in corpus.batches():
        rows = _checked_rows(column, where, read, budget.seq_length, vocab_size)
        if blocks is not None:
            heldout, guard = row_roles(np.arange(read, read + len(rows)), *blocks)
            heldout &= np.cumsum(heldout) + held_rows <= v.max_rows
            held.write(rows[heldout].astype(dtype))
            held_rows += int(heldout.sum())
            guard_rows += int(guard.sum())
            read += len(rows)
            rows = rows[~heldout & ~guard]
        else:
            read += len(rows)
        rows = rows[: budget.max_rows - written]
        ends.add((rows == dot).sum(axis=1) if dot is not None else np.zeros(len(rows), dtype=np.int64))
        writer.write(rows.astype(dtype))
        written += len(rows)
        if written >= budget.max_rows:
            break
    shards, data_hash = writer.close()
    capped = written == budget.max_rows and (total is None or total > budget.max_rows)
    if written == 0:
        raise UsageError(f"--source {corpus.spec}: the pre-tokenized corpus has no rows")
    if own is not None:
        for where, column in own.batches():
            rows = _checked_rows(column, where, held_rows, budget.seq_length, vocab_size)[: v.max_rows - held_rows]
            held.write(rows.astype(dtype))
            held_rows += len(rows)
            if held_rows >= v.max_rows:
                break
    held_shards, held_hash = held.close()
    how = {"origin": "validation"} if own is not None else \
        {"origin": "blocks", "share": v.share, "seed": budget.seed, "rows_beside_dropped": guard_rows}
    record = prepared.heldout_record(held_shards, held_hash, budget.seq_length, **how)
    return shards, data_hash, {"rows": written, "stopped_at_max_rows": capped, "sentence_ends": ends.summary(),
                               "heldout": record}


_BLOCKS = 16
"""Held-out blocks per pre-tokenized corpus: spread over the rows, yet few edges (each edge costs a row)."""


def heldout_blocks(span: int, share: float, max_rows: int, seed: int) -> tuple[int, np.ndarray]:
    """(block length, chosen block numbers): about min(share × span, max_rows) rows in up to 16 blocks of
    consecutive rows at seeded places among the first `span` rows (at least one row, never more than half)."""
    want = min(max(round(share * span), 1), max_rows, span // 2)
    if want <= 0:
        return 1, np.zeros(0, dtype=np.int64)
    length = -(-want // min(_BLOCKS, want))
    count = -(-want // length)
    slots = span // length
    chosen = np.random.default_rng([seed, prepared.HELDOUT_STREAM]).choice(slots, min(count, slots), replace=False)
    return length, np.sort(chosen)


def row_roles(index: np.ndarray, length: int, chosen: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(held out, dropped) per global row index: rows inside a chosen block are held out; a row right before or
    after a block, which may hold part of a held-out document, is dropped from both splits."""
    heldout = np.isin(index // length, chosen)
    beside = np.isin((index + 1) // length, chosen) | np.isin(np.maximum(index - 1, 0) // length, chosen)
    return heldout, beside & ~heldout


def _checked_rows(column: pa.Array, where: str, first_row: int, seq_length: int, vocab_size: int) -> np.ndarray:
    """One batch as an int64 [rows, seq_length] array, or a one-line error naming the row and the fix."""
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks()
    kind = column.type
    is_list = pa.types.is_list(kind) or pa.types.is_large_list(kind) or pa.types.is_fixed_size_list(kind)
    if not is_list or not pa.types.is_integer(kind.value_type):
        raise UsageError(f"{where}: input_ids is {kind}, not lists of integer token ids")
    if column.null_count:
        raise UsageError(f"{where}: row {first_row + pc.index(column.is_null(), True).as_py()} has no input_ids")
    lengths = pc.list_value_length(column).to_numpy(zero_copy_only=False)
    bad = np.flatnonzero(lengths != seq_length)
    if bad.size:
        row = int(bad[0])
        raise UsageError(f"{where}: row {first_row + row} has {lengths[row]} tokens but the data budget's seq_length"
                         f" is {seq_length}; pre-tokenized rows are used as they are, so set seq_length to the"
                         " corpus's row length in the data budget")
    flat = pc.list_flatten(column)
    if flat.null_count:
        raise UsageError(f"{where}: a row near {first_row} holds a null token id; the corpus file is damaged")
    rows = flat.to_numpy(zero_copy_only=False).astype(np.int64).reshape(-1, seq_length)
    outside = (rows < 0) | (rows >= vocab_size)
    if outside.any():
        row, col = (int(i[0]) for i in np.nonzero(outside))
        raise UsageError(f"{where}: row {first_row + row} holds token id {rows[row, col]}, outside the corpus"
                         f" tokenizer's {vocab_size} ids; the rows were made with another tokenizer: put that"
                         " one into the corpus's tokenizer/ folder")
    return rows


class _SentenceEnds:
    """Mean "." count per row over all rows, the first 1000 and the last 1000 (shows the corpus's order)."""

    def __init__(self) -> None:
        self.total, self.rows = 0, 0
        self.first: list[np.ndarray] = []
        self.last = np.zeros(0, dtype=np.int64)

    def add(self, counts: np.ndarray) -> None:
        counts = counts.astype(np.int64)
        if self.rows < 1000:
            self.first.append(counts[: 1000 - self.rows])
        self.total += int(counts.sum())
        self.rows += len(counts)
        self.last = np.concatenate([self.last, counts])[-1000:]

    def summary(self) -> dict[str, float]:
        first = np.concatenate(self.first) if self.first else np.zeros(1)
        return {"sentence_ends_per_row_mean": self.total / max(self.rows, 1),
                "sentence_ends_first_rows_mean": float(first.mean()),
                "sentence_ends_last_rows_mean": float(self.last.mean()) if len(self.last) else 0.0}


def prepare(
    corpus: Corpus, budget: DataBudget, tok: Tokenizer, tok_file: Path, workdir: Path, *, progress: Progress,
    chash: str, warn: Callable[[str], object] | None = None,
) -> dict[str, Any]:
    """Copy the corpus's tokenizer files and rows into `workdir`; returns the manifest (the caller writes it).
    `warn` hears of a shard that will not fit on the disk before it is written."""
    t0 = time.perf_counter()
    config = check_config(corpus, budget, tok, tok_file)
    special = special_ids(tok, str(tok_file), folder=tok_file.parent)  # masked-LM pretraining needs its <mask>
    roles = {f"{role}_token": tok.id_to_token(i) for role, i in special.as_dict().items() if i is not None}
    ids = {token: tok.token_to_id(token) for token in roles.values()}
    for name in TOKENIZER_FILES:  # verbatim: the prepared tokenizer.json is the corpus's own
        if (tok_file.parent / name).is_file():
            shutil.copyfile(tok_file.parent / name, workdir / name)
    shards, data_hash, stats = copy_rows(corpus, budget, tok, workdir, progress, warn)
    rows = stats["rows"]
    seconds = time.perf_counter() - t0
    vocab_size = tok.get_vocab_size()
    return prepared.new_manifest(
        content_hash=chash, data_hash=data_hash, seq_length=budget.seq_length, vocab_size=vocab_size, num_rows=rows,
        shards=shards, tokenizer_hash=tokenizer_hash(tok), special_tokens=ids,
        source={"spec": corpus.spec, **corpus.identity()}, budget=budget.model_dump(mode="json"),
        heldout=stats["heldout"], tokenizer_trained=False, special_token_roles=roles,
        pretokenized={"layout": corpus.layout, "stopped_at_max_rows": stats["stopped_at_max_rows"],
                      "corpus_config": config},
        counts={"rows": rows, "tokens": rows * budget.seq_length},
        ordering={"method": "corpus", **stats["sentence_ends"]},
        timings_s={"copy": round(seconds, 3)},
    )
