"""The prepared-data format (what `cram prepare-data` writes and `cram pretrain` reads), in one place: its content
hash, building, writing and reading its manifest, and reading its rows.

Layout: `manifest.json` (format `cram-prepared/1`), `tokenizer.json`, and shards `tokens_NNNNN.bin`, each a
raw row-major array of the manifest's dtype with shape [rows, seq_length] (np.memmap-able). Each shard entry
records its `checksum` (`xxh3_64:HEX` of the file's bytes; folders prepared before it have none). A held-out
split, when there is one, lives in shards of its own (`heldout_NNNNN.bin`) named by the manifest's `heldout`
record, so no training row can ever come from it.

Two independent checks keep damaged data away from the model: `verify` compares every shard with its
checksum before training (what a flipped bit or an edited file changes), and `rows` checks every id it hands
out against the vocabulary (what would otherwise crash the embedding, or a GPU with a device-side assert).
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from cramcli.data.checksum import shard_checksum
from cramcli.data.packing import token_dtype
from cramcli.utils.atomic import write_json
from cramcli.utils.errors import UsageError
from cramcli.utils.jsonfile import read_object_or_none

FORMAT = "cram-prepared/1"
MANIFEST = "manifest.json"
TOKENIZER = "tokenizer.json"
DATA_ROOT = Path("outputs/data")
_CREATE = "create it with `cram prepare-data`"
_ID_CHECK_ROWS = 1 << 16


def content_hash(code_version: int, key: dict[str, Any]) -> str:
    """Short hash of everything that determines a folder's rows (`key`), the format and the version of the code
    that made them (each way of preparing data keeps its own `CODE_VERSION`)."""
    blob = {"format": FORMAT, "code": code_version, **key}
    return hashlib.sha256(json.dumps(blob, sort_keys=True).encode()).hexdigest()[:16]


def new_manifest(*, content_hash: str, data_hash: str, seq_length: int, vocab_size: int, num_rows: int,
                 shards: list[dict[str, Any]], tokenizer_hash: str, special_tokens: dict[str, int],
                 source: dict[str, Any], budget: dict[str, Any], heldout: dict[str, Any] | None,
                 **details: Any) -> dict[str, Any]:
    """The manifest of a prepared folder: the fields every reader relies on (`heldout`: see `heldout_record`),
    then `details` (counts, ordering, timings, how the rows were made)."""
    return {"format": FORMAT, "content_hash": content_hash, "data_hash": data_hash, "seq_length": seq_length,
            "vocab_size": vocab_size, "dtype": token_dtype(vocab_size).name, "num_rows": num_rows,
            "num_tokens": num_rows * seq_length, "shards": shards, "tokenizer": TOKENIZER,
            "tokenizer_hash": tokenizer_hash, "special_tokens": special_tokens, "source": source, "budget": budget,
            "heldout": heldout, **details}


def write_manifest(folder: Path, manifest: dict[str, Any]) -> None:
    """manifest.json marks a folder finished, so it is written last (atomically)."""
    write_json(Path(folder) / MANIFEST, manifest)


def read_manifest(folder: Path) -> dict[str, Any] | None:
    """The manifest of a finished folder; None when there is none or it cannot be read (an unfinished folder)."""
    return read_object_or_none(Path(folder) / MANIFEST)


def pointer_path(budget_name: str, root: Path = DATA_ROOT) -> Path:
    """`outputs/data/latest_<budget>.json`, pointing at the last folder prepared for that data budget."""
    return root / f"latest_{budget_name}.json"


def write_pointer(budget_name: str, folder: Path, root: Path = DATA_ROOT) -> None:
    """Point `cram pretrain --budget NAME` at `folder`."""
    write_json(pointer_path(budget_name, root), {"path": str(Path(folder).resolve())})


def default_prepared_dir(budget_name: str, root: Path = DATA_ROOT) -> Path | None:
    """The folder `cram prepare-data --budget NAME` wrote last, or None when there is none (or it is gone)."""
    pointer = pointer_path(budget_name, root)
    try:
        path = Path(json.loads(pointer.read_text())["path"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return path if (path / MANIFEST).is_file() else None


def open_for_training(data: Path | None, budget_label: str, arch: Any, *, verify: bool = True,
                      warn: Callable[[str], object] = print,
                      on_bytes: Callable[[int, int], object] | None = None) -> PreparedData:
    """The prepared data `cram pretrain` trains on (`--data`, else what prepare-data wrote last for the same
    budget name), checked against the arch: vocabulary, sequence length, tokenizer present; and, unless
    `verify` is off (`--no-verify`, said through `warn`), every shard against its checksum (`on_bytes(read,
    total)` follows the reading)."""
    if data is None:
        data = default_prepared_dir(budget_label)
        if data is None:
            raise UsageError(f"no prepared data for budget {budget_label!r}; run `cram prepare-data --budget "
                             f"{budget_label}` first or pass --data FOLDER")
    prepared = PreparedData(data)
    if prepared.vocab_size > arch.vocab_size:
        raise UsageError(f"{prepared.path}: vocabulary of {prepared.vocab_size} tokens exceeds the arch's "
                         f"vocab_size {arch.vocab_size}; use a matching --arch or re-run prepare-data")
    if prepared.seq_length > arch.max_seq_length:
        raise UsageError(f"{prepared.path}: seq_length {prepared.seq_length} exceeds the arch's max_seq_length "
                         f"{arch.max_seq_length}; use a matching --arch or re-run prepare-data")
    if not prepared.tokenizer_path.is_file():
        raise UsageError(f"{prepared.tokenizer_path}: tokenizer missing from the prepared data; re-run prepare-data")
    if verify:
        result = prepared.verify(on_bytes=None if on_bytes is None else
                                 lambda n: on_bytes(n, prepared.total_bytes))
        if result["unchecked"]:
            warn(f"{prepared.path}: {len(result['unchecked'])} shard(s) have no checksum in the manifest (prepared "
                 "by an earlier cram) and were not verified; re-run prepare-data --force to add them")
    else:
        warn(f"--no-verify: {len(prepared.all_shards())} shard(s), {prepared.total_bytes:,} bytes in {prepared.path} were "
             "not checked against their checksums (ids are still checked against the vocabulary)")
    return prepared


HELDOUT_STREAM = 0x4E1D
"""Second entropy word of the generator that chooses held-out documents or blocks (`default_rng([seed, this])`),
so the choice draws independently of the shuffle, which uses the same data-budget seed."""


def heldout_record(shards: list[dict[str, Any]], data_hash: str, seq_length: int, *, origin: str,
                   **details: Any) -> dict[str, Any] | None:
    """The manifest's `heldout` entry: its shards, row count and hash, and how it was chosen (`origin`:
    `documents` split off by the seed, `blocks` of pre-tokenized rows, or the corpus's own `validation` split).
    None when no row was set aside."""
    rows = sum(int(shard["rows"]) for shard in shards)
    if not rows:
        return None
    return {"num_rows": rows, "num_tokens": rows * seq_length, "shards": shards, "data_hash": data_hash,
            "origin": origin, **details}


class PreparedData:
    """Token rows of a prepared-data folder, read through memory maps (nothing is loaded up front)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        manifest_file = self.path / MANIFEST
        if not self.path.is_dir():
            raise UsageError(f"{self.path}: no prepared-data folder here; {_CREATE}")
        if not manifest_file.is_file():
            raise UsageError(f"{self.path}: no manifest.json, so not a finished prepared-data folder; {_CREATE}")
        manifest = read_manifest(self.path)
        if manifest is None:
            raise UsageError(f"{manifest_file}: unreadable; {_CREATE} again")
        self.manifest: dict[str, Any] = manifest
        if self.manifest.get("format") != FORMAT:
            raise UsageError(
                f"{manifest_file}: format {self.manifest.get('format')!r} is not {FORMAT!r}; {_CREATE} again"
            )
        self.seq_length = int(self.manifest["seq_length"])
        self.vocab_size = int(self.manifest["vocab_size"])
        self.dtype = np.dtype(self.manifest["dtype"])
        self.tokenizer_path = self.path / self.manifest.get("tokenizer", TOKENIZER)
        self.shards: list[dict[str, Any]] = list(self.manifest["shards"])
        self.heldout: dict[str, Any] | None = self.manifest.get("heldout") or None
        """The held-out record (see `heldout_record`), or None when the data has no held-out split."""
        self._maps: list[np.memmap] = []
        self._starts: list[int] = []
        self.total_bytes = start = 0
        for shard in self.shards:
            file = self.path / shard["file"]
            rows = int(shard["rows"])
            expected = rows * self.seq_length * self.dtype.itemsize
            if not file.is_file() or file.stat().st_size != expected:
                raise UsageError(f"{file}: missing or not {expected} bytes as the manifest says; {_CREATE} again")
            self._maps.append(np.memmap(file, dtype=self.dtype, mode="r", shape=(rows, self.seq_length)))
            self._starts.append(start)
            start += rows
            self.total_bytes += expected
        self.num_rows = start
        # What `verify` reads: the held-out shards too.
        self.total_bytes += sum(int(shard["rows"]) for shard in self.all_shards()[len(self.shards):]) \
            * self.seq_length * self.dtype.itemsize
        if self.num_rows != int(self.manifest["num_rows"]):
            raise UsageError(f"{manifest_file}: shards hold {self.num_rows} rows, num_rows says "
                             f"{self.manifest['num_rows']}; {_CREATE} again")

    def all_shards(self) -> list[dict[str, Any]]:
        """The training shards, then the held-out split's."""
        return self.shards + list((self.heldout or {}).get("shards", []))

    def heldout_rows(self) -> np.ndarray | None:
        """Every held-out row as int64 [rows, seq_length] (a few thousand rows at most), ids checked against the
        vocabulary; None when the data has no held-out split."""
        if not self.heldout:
            return None
        parts = []
        for shard in self.heldout["shards"]:
            file, rows = self.path / shard["file"], int(shard["rows"])
            if not file.is_file() or file.stat().st_size != rows * self.seq_length * self.dtype.itemsize:
                raise UsageError(f"{file}: missing or not the size the manifest's heldout record says; {_CREATE} "
                                 "again")
            part = np.fromfile(file, dtype=self.dtype).reshape(rows, self.seq_length).astype(np.int64)
            if ((part < 0) | (part >= self.vocab_size)).any():
                raise UsageError(f"{file}: holds token ids outside the vocabulary of {self.vocab_size}; the shard is "
                                 f"damaged — re-run `cram prepare-data --force` for {self.path}")
            parts.append(part)
        return np.concatenate(parts) if parts else None

    def verify(self, *, ids: bool = False, on_bytes: Callable[[int], object] | None = None) -> dict[str, Any]:
        """Re-read every shard and compare it with the manifest's checksum, and with `ids` every token id with
        the vocabulary; UsageError naming the first shard (and row) that fails. Returns what was checked (and
        which shards had no checksum to check against)."""
        t0, checked, unchecked = time.perf_counter(), [], []
        for shard in self.all_shards():
            file, want = self.path / shard["file"], shard.get("checksum")
            if not want:
                unchecked.append(shard["file"])
                continue
            got = shard_checksum(file, on_bytes)
            if got != want:
                raise UsageError(f"{file}: checksum {got} differs from the manifest's {want}: the shard changed "
                                 f"after prepare-data wrote it (disk or copy error, or an edit); re-run "
                                 f"`cram prepare-data --force` for {self.path}")
            checked.append(shard["file"])
        if ids:
            for start in range(0, self.num_rows, _ID_CHECK_ROWS):
                self.rows(start, min(_ID_CHECK_ROWS, self.num_rows - start))  # raises on the first bad id
        return {"path": str(self.path), "verified": checked, "unchecked": unchecked, "ids_checked": ids,
                "bytes": self.total_bytes, "seconds": round(time.perf_counter() - t0, 3)}

    def locate(self, row: int) -> tuple[Path, int]:
        """The shard file and the row inside it of global row `row`."""
        index = int(np.searchsorted(self._starts, row, side="right")) - 1
        return self.path / self.shards[index]["file"], row - self._starts[index]

    def source_record(self) -> dict[str, Any]:
        """Where the rows came from (for run-config.json and the model card): the source and the data budget."""
        budget = self.manifest.get("budget") or None
        source = (self.manifest.get("source") or {}).get("spec") or (budget or {}).get("source")
        return {"data_source": source, "data_budget": budget}

    def __len__(self) -> int:
        return self.num_rows

    def rows(self, start: int, count: int) -> np.ndarray:
        """Rows [start, start+count) by global index, crossing shard borders, as int64 (ready for embeddings)."""
        if start < 0 or count < 0 or start + count > self.num_rows:
            raise IndexError(f"rows {start}..{start + count} outside 0..{self.num_rows}")
        out = np.empty((count, self.seq_length), dtype=np.int64)
        filled = 0
        for shard_start, data in zip(self._starts, self._maps, strict=True):
            lo = max(start + filled - shard_start, 0)
            if lo >= len(data) or filled == count:
                continue
            take = min(len(data) - lo, count - filled)
            out[filled : filled + take] = data[lo : lo + take]
            filled += take
        self._check_ids(out, start)
        return out

    def _check_ids(self, rows: np.ndarray, start: int) -> None:
        """Every id inside the vocabulary, checked on the host in one vectorised pass (a bad id would crash the
        embedding; on a GPU as a device-side assert that takes the CUDA context down)."""
        bad = (rows >= self.vocab_size) | (rows < 0)
        if not bad.any():
            return
        flat = int(np.argmax(bad))
        row, column = divmod(flat, self.seq_length)
        file, shard_row = self.locate(start + row)
        raise UsageError(f"{file}: row {shard_row} holds token id {int(rows[row, column])} at position {column}, "
                         f"outside the vocabulary of {self.vocab_size}; the shard is damaged — re-run "
                         f"`cram prepare-data --force` for {self.path}")
