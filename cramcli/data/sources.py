"""Raw text sources, streamed one document at a time: HF hub datasets, local files and folders, `embedded`.

A source spec is `hf:NAME[:CONFIG]`, a path, or `embedded`. Local formats, by file name:
- `.jsonl` (and `.jsonl.gz`, `.jsonl.zst` as the Pile ships its shards): one JSON object per line with the text field; bad lines are counted with
  `file:line` and skipped.
- `.json`, `.parquet` (optionally `.gz` for json): read through HF `datasets` (`load_dataset("json"|"parquet",
  streaming=True)`), the same code path as hub datasets.
- anything else (`.txt`, no suffix, `.gz`/`.zst` of those): plain text. WikiExtractor output (`<doc ...>` …
  `</doc>` lines) gives one document per article with the tags stripped; other text gives one document per
  block of lines separated by a blank line.
Bytes that are not UTF-8 are replaced by U+FFFD and counted.
"""

from __future__ import annotations

import codecs
import gzip
import hashlib
import itertools
import json
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from cramcli.utils.errors import RunError, UsageError

LOCAL_HINT = "use local files instead: --source ./folder (txt, jsonl[.gz|.zst], json, parquet files)"
_DOC_OPEN = re.compile(r"^<doc(\s[^>]*)?>\s*$")


@dataclass
class SourceStats:
    """What reading found wrong, reported in the manifest."""

    bad_bytes: int = 0
    """Undecodable bytes replaced by U+FFFD."""
    bad_lines: int = 0
    """JSON lines that were not JSON objects with the text field."""
    bad_line_examples: list[str] = field(default_factory=list)
    """The first few bad lines as `file:line: why`."""
    files_read: int = 0

    def bad_line(self, where: str) -> None:
        self.bad_lines += 1
        if len(self.bad_line_examples) < 10:
            self.bad_line_examples.append(where)


class Source:
    """A document stream with an identity that changes whenever its content may have changed."""

    spec: str
    stats: SourceStats

    def identity(self) -> dict[str, Any]:
        raise NotImplementedError

    def documents(self) -> Iterator[str]:
        raise NotImplementedError

    def slug(self) -> str:
        """Short, file-name-safe name for default output folders."""
        return re.sub(r"[^A-Za-z0-9._-]+", "-", self.spec.removeprefix("hf:")).strip("-.")[-40:] or "data"


def open_source(
    spec: str, *, split: str = "train", text_field: str = "text", seed: int = 0, max_documents: int = 10**9
) -> Source:
    """Parse a `--source` / budget `source` value; missing paths fail here, before any work."""
    if spec == "embedded":
        return EmbeddedSource(seed, max_documents)
    if spec.startswith("hf:"):
        name, _, config = spec[3:].partition(":")
        if not name:
            raise UsageError(f"--source {spec}: give a dataset name, e.g. hf:allenai/c4:en")
        return HubSource(spec, name, config or None, split, text_field)
    path = Path(spec).expanduser()
    if not path.exists():
        raise UsageError(
            f"--source {spec}: no such file or folder; pass an existing path, hf:NAME[:CONFIG] or 'embedded'"
        )
    return LocalSource(spec, path, text_field)


# ----------------------------------------------------------------------------------------------------------
# HF hub


class HubSource(Source):
    def __init__(self, spec: str, name: str, config: str | None, split: str, text_field: str) -> None:
        self.spec, self.name, self.config, self.split, self.text_field = spec, name, config, split, text_field
        self.stats = SourceStats()

    def identity(self) -> dict[str, Any]:
        return {"kind": "hf", "name": self.name, "config": self.config, "split": self.split}

    def documents(self) -> Iterator[str]:
        try:
            import datasets
            from huggingface_hub.utils import logging as hub_logging

            # Without this, every retry of an unreachable hub logs a line of its own before our one-line error.
            hub_logging.set_verbosity_error()
            dataset = datasets.load_dataset(self.name, self.config, split=self.split, streaming=True)
        except Exception as exc:  # datasets raises many types (ConnectionError, DatasetNotFoundError, ...)
            raise RunError(
                f"--source {self.spec}: cannot open the HF hub dataset ({_first_line(exc)}); {LOCAL_HINT}"
            ) from None
        yield from _hf_texts(dataset, self.text_field, self.spec)


def _hf_texts(dataset: Any, text_field: str, where: str) -> Iterator[str]:
    rows = iter(dataset)
    while True:
        try:
            row = next(rows)
        except StopIteration:
            return
        except Exception as exc:
            raise RunError(f"{where}: reading failed ({_first_line(exc)}); {LOCAL_HINT}") from None
        if text_field not in row:
            raise UsageError(
                f"{where}: no text field {text_field!r} (columns: {', '.join(row)}); set text_field in the data budget"
            )
        text = row[text_field]
        if isinstance(text, str):
            yield text


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0][:200]}" if text else type(exc).__name__


# ----------------------------------------------------------------------------------------------------------
# local files


class LocalSource(Source):
    def __init__(self, spec: str, path: Path, text_field: str) -> None:
        self.spec, self.path, self.text_field = spec, path, text_field
        self.stats = SourceStats()
        self.files = _list_files(path)
        if not self.files:
            raise UsageError(f"--source {spec}: folder has no files to read (txt, jsonl[.gz|.zst], json, parquet)")

    def slug(self) -> str:
        return re.sub(r"[^A-Za-z0-9._-]+", "-", self.path.resolve().name).strip("-.")[-40:] or "data"

    def identity(self) -> dict[str, Any]:
        # Path, size and modification time of every file: any edit, addition or removal changes the hash.
        files = []
        for f in self.files:
            st = f.stat()
            files.append([str(f.resolve()), st.st_size, st.st_mtime_ns])
        return {"kind": "local", "text_field": self.text_field, "files": files}

    def documents(self) -> Iterator[str]:
        for file in self.files:
            self.stats.files_read += 1
            name = file.name.lower()
            if name.endswith(".zst") and not name.endswith(".jsonl.zst"):
                name = name.removesuffix(".zst") + ".txt"  # only JSON lines and plain text are read compressed
            name = name.removesuffix(".gz").removesuffix(".zst")
            if name.endswith(".jsonl"):
                yield from self._jsonl(file)
            elif name.endswith(".json"):
                yield from self._via_datasets("json", file)
            elif name.endswith(".parquet"):
                yield from self._via_datasets("parquet", file)
            else:
                yield from self._text(file)

    def _lines(self, file: Path) -> Iterator[str]:
        with _open_binary(file) as handle:
            lines = _zst_lines(handle) if file.name.lower().endswith(".zst") else iter(handle)
            while True:
                try:
                    raw = next(lines)
                except StopIteration:
                    return
                except Exception as exc:  # gzip's OSError/EOFError, zstandard.ZstdError: all mean a bad file
                    raise UsageError(f"{file}: cannot read ({_first_line(exc)}); the file is damaged or cut short,"
                                     " fetch it again") from None
                yield self._decode(raw)

    def _decode(self, raw: bytes) -> str:
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            before = _bad_bytes[0]
            text = raw.decode("utf-8", errors=_COUNTING)
            self.stats.bad_bytes += _bad_bytes[0] - before
            return text

    def _jsonl(self, file: Path) -> Iterator[str]:
        for number, line in enumerate(self._lines(file), 1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as exc:
                self.stats.bad_line(f"{file}:{number}: not JSON ({exc.msg})")
                continue
            text = obj.get(self.text_field) if isinstance(obj, dict) else None
            if not isinstance(text, str):
                self.stats.bad_line(f"{file}:{number}: no string field {self.text_field!r}")
                continue
            yield text

    def _text(self, file: Path) -> Iterator[str]:
        lines = self._lines(file)
        first = next(lines, None)
        if first is None:
            return
        lines = itertools.chain([first], lines)
        if _DOC_OPEN.match(first):
            yield from _wiki_docs(lines)
        else:
            yield from _paragraph_docs(lines)

    def _via_datasets(self, builder: str, file: Path) -> Iterator[str]:
        import datasets

        try:
            dataset = datasets.load_dataset(builder, data_files=str(file), split="train", streaming=True)
            yield from _hf_texts(dataset, self.text_field, str(file))
        except (UsageError, RunError) as exc:
            raise UsageError(*exc.lines) from None
        except Exception as exc:
            raise UsageError(f"{file}: cannot read as {builder} ({_first_line(exc)})") from None


# A codecs error handler is global and looked up by name: it replaces like "replace" and counts the bytes.
_COUNTING = "cram-count-replace"
_bad_bytes = [0]


def _count_and_replace(exc: UnicodeError) -> tuple[str, int]:
    assert isinstance(exc, UnicodeDecodeError)
    _bad_bytes[0] += exc.end - exc.start
    return "\ufffd", exc.end


codecs.register_error(_COUNTING, _count_and_replace)


def _wiki_docs(lines: Iterator[str]) -> Iterator[str]:
    """WikiExtractor files: text between `<doc ...>` and `</doc>` lines is one document, tags dropped."""
    buf: list[str] = []
    inside = False
    for line in lines:
        stripped = line.strip()
        if _DOC_OPEN.match(stripped):
            inside, buf = True, []
        elif stripped == "</doc>":
            if inside and "".join(buf).strip():
                yield "".join(buf).strip()
            inside, buf = False, []
        elif inside:
            buf.append(line)
    if inside and "".join(buf).strip():
        yield "".join(buf).strip()


def _paragraph_docs(lines: Iterator[str]) -> Iterator[str]:
    buf: list[str] = []
    for line in lines:
        if line.strip():
            buf.append(line)
        elif buf:
            yield "".join(buf).strip()
            buf = []
    if buf:
        yield "".join(buf).strip()


def _open_binary(file: Path) -> BinaryIO:
    try:
        if file.name.lower().endswith(".gz"):
            return gzip.open(file, "rb")  # type: ignore[return-value]
        return open(file, "rb")
    except OSError as exc:
        raise UsageError(f"{file}: cannot read ({exc.strerror})") from None


def _zst_lines(handle: BinaryIO, chunk: int = 1 << 20) -> Iterator[bytes]:
    """Lines of a zstd file, streamed (memory: one chunk plus the decoder window). Reads frame after frame (the
    Pile's shards hold several) and fails on a file cut short, which zstandard's stream reader would accept."""
    import zstandard

    ctx = zstandard.ZstdDecompressor()
    frame, pending, started = ctx.decompressobj(), b"", False
    while data := handle.read(chunk):
        while data:
            out = frame.decompress(data)
            started = True
            pending += out
            data = b""
            if frame.eof:  # the frame ended inside this chunk: the rest belongs to the next frame
                data, frame, started = frame.unused_data, ctx.decompressobj(), False
        *lines, pending = pending.split(b"\n")
        for line in lines:
            yield line + b"\n"
    if started:
        raise zstandard.ZstdError("the last zstd frame is cut short")
    if pending:
        yield pending


def _list_files(path: Path) -> list[Path]:
    if path.is_file():
        return [path]
    files = []
    for root, dirs, names in os.walk(path):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        files += [Path(root) / n for n in sorted(names) if not n.startswith(".")]
    return files


# ----------------------------------------------------------------------------------------------------------
# embedded


class EmbeddedSource(Source):
    """The synthetic corpus shipped in `cramcli/data/embedded.py` (offline, no files)."""

    def __init__(self, seed: int, num_documents: int) -> None:
        self.spec, self.seed, self.num_documents = "embedded", seed, num_documents
        self.stats = SourceStats()

    def _module(self) -> Any:
        try:
            from cramcli.data import embedded
        except ImportError:
            raise RunError(
                "--source embedded: the embedded corpus (cramcli/data/embedded.py) is not available in this"
                " installation; pass a local folder or hf:NAME instead"
            ) from None
        return embedded

    def identity(self) -> dict[str, Any]:
        # The generator's code decides the text, so its source hash keys the cache.
        code = Path(self._module().__file__).read_bytes()
        return {
            "kind": "embedded",
            "seed": self.seed,
            "num_documents": self.num_documents,
            "code": hashlib.sha256(code).hexdigest()[:16],
        }

    def documents(self) -> Iterator[str]:
        return self._module().iter_documents(seed=self.seed, num_documents=self.num_documents)
