"""The tokenizer that belongs to a checkpoint: its files, its special-token ids, and copying it beside weights.

A checkpoint's tokenizer is `tokenizer.json` (the `tokenizers` file) plus the HF side files
(`tokenizer_config.json`, `special_tokens_map.json`) that name its special tokens. The ids are read, never
assumed: the original cramming tokenizers put their special tokens in hash-seeded set order, so `<pad>` can
sit at any id. A tokenizer without side files is taken to use cram's token names (`<pad>`, `<cls>`, ...).

Problems raise `CheckpointError` (a ValueError) naming the file and the fix; stages turn it into one line.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from tokenizers import Tokenizer

from cramcli.data.tokenizer import TOKENIZER_FILES, SpecialIds, special_ids
from cramcli.model.errors import CheckpointError
from cramcli.utils.atomic import write_json
from cramcli.utils.jsonfile import read_object


def load_tokenizer(checkpoint_dir: Path) -> Tokenizer:
    """The checkpoint's `tokenizer.json` as a `tokenizers.Tokenizer` (as saved: no padding/truncation changes)."""
    file = Path(checkpoint_dir) / "tokenizer.json"
    if not file.is_file():
        raise CheckpointError(f"{file}: missing; a checkpoint needs the tokenizer it was trained with beside its "
                         "weights (copy that tokenizer.json and its tokenizer_config.json into the folder)")
    try:
        return Tokenizer.from_file(str(file))
    except Exception as exc:  # the Rust loader raises plain Exceptions with a serde message
        raise CheckpointError(f"{file}: not a valid tokenizer.json ({str(exc).splitlines()[0]})") from None


def checkpoint_special_ids(checkpoint_dir: Path, tok: Tokenizer | None = None) -> SpecialIds:
    """The special-token ids of the checkpoint's tokenizer, by the one rule (`data/tokenizer.special_ids`: names
    from its side files, ids from tokenizer.json), problems raised as `CheckpointError`."""
    folder = Path(checkpoint_dir)
    return special_ids(tok or load_tokenizer(folder), str(folder / "tokenizer.json"), folder=folder,
                       error=CheckpointError)


def _read_json(path: Path) -> dict[str, Any] | None:
    if not path.is_file():
        return None
    return read_object(path, fix="restore it or delete it to use cram's token names", error=CheckpointError)


def copy_tokenizer(source: Path, dest: Path, model_max_length: int) -> list[str]:
    """Copy tokenizer.json (byte for byte) and its HF side files from `source` (the file or its folder) into
    `dest`, and write tokenizer_config.json so `AutoTokenizer.from_pretrained(dest)` gives the special tokens
    and `model_max_length` = the model's longest input. Returns the files written."""
    source = Path(source)
    folder, main = (source, source / "tokenizer.json") if source.is_dir() else (source.parent, source)
    if not main.is_file():
        raise CheckpointError(f"{main}: tokenizer file not found; pass the tokenizer.json the model was trained with")
    shutil.copyfile(main, dest / "tokenizer.json")
    written = ["tokenizer.json"]
    for name in TOKENIZER_FILES[1:]:
        if (folder / name).is_file():
            shutil.copyfile(folder / name, dest / name)
            written.append(name)
    config = _read_json(dest / "tokenizer_config.json")
    if config is None:
        tok = load_tokenizer(dest)
        ids = checkpoint_special_ids(dest, tok)
        config = {"tokenizer_class": "PreTrainedTokenizerFast",
                  **{f"{role}_token": tok.id_to_token(i) for role, i in ids.as_dict().items() if i is not None}}
        written.append("tokenizer_config.json")
    # The model cannot take more positions than its sinusoid table has rows, whatever the tokenizer said.
    config["model_max_length"] = model_max_length
    write_json(dest / "tokenizer_config.json", config)
    checkpoint_special_ids(dest)  # a tokenizer whose special tokens are not in its vocabulary fails here, not later
    return written
