"""The tokenizer that belongs to a checkpoint: its files, its special-token ids, and copying it beside weights.

A checkpoint's tokenizer is `tokenizer.json` (the `tokenizers` file) plus the HF side files
(`tokenizer_config.json`, `special_tokens_map.json`) that name its special tokens. The ids are read, never
assumed: the original cramming tokenizers put their special tokens in hash-seeded set order, so `<pad>` can
sit at any id. A tokenizer without side files is taken to use cram's token names (`<pad>`, `<cls>`, ...).

Problems raise `CheckpointError` (a ValueError) naming the file and the fix; stages turn it into one line.
"""

from __future__ import annotations

import shutil
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from tokenizers import Tokenizer

from cramcli.data.tokenizer import TOKENIZER_FILES
from cramcli.model.errors import CheckpointError
from cramcli.utils.atomic import write_json
from cramcli.utils.jsonfile import read_object

# cram's own token names (its tokenizer also fixes their ids, see cramcli/data/tokenizer.py).
CRAM_TOKENS = {"pad": "<pad>", "cls": "<cls>", "sep": "<sep>", "mask": "<mask>", "unk": "<unk>", "bos": "<s>",
               "eos": "</s>"}
REQUIRED = ("pad", "cls", "sep", "mask")


@dataclass(frozen=True)
class SpecialIds:
    """Ids of a tokenizer's special tokens; pad, cls, sep and mask always exist, the others may not."""

    pad: int
    cls: int
    sep: int
    mask: int
    unk: int | None = None
    bos: int | None = None
    eos: int | None = None

    def config_fields(self) -> dict[str, int]:
        """The HF config fields a checkpoint's config.json carries: pad/cls/sep/mask_token_id."""
        return {f"{name}_token_id": getattr(self, name) for name in REQUIRED}

    def as_dict(self) -> dict[str, int | None]:
        return asdict(self)


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


def special_ids(checkpoint_dir: Path, tok: Tokenizer | None = None) -> SpecialIds:
    """The special-token ids of the checkpoint's tokenizer: names from tokenizer_config.json (else
    special_tokens_map.json, else cram's names), ids from tokenizer.json."""
    folder = Path(checkpoint_dir)
    tok = tok or load_tokenizer(folder)
    names, named_in = _token_names(folder)
    ids: dict[str, int | None] = {}
    for role, name in names.items():
        ids[role] = tok.token_to_id(name) if name is not None else None
        if role in REQUIRED and ids[role] is None:
            fix = (f"set {role}_token there to the tokenizer's {role} token" if named_in != "tokenizer.json" else
                   f"add a tokenizer_config.json naming its {', '.join(f'{r}_token' for r in REQUIRED)}")
            raise CheckpointError(f"{folder / named_in}: {role} token {name!r} is not in tokenizer.json's vocabulary; {fix}")
    return SpecialIds(**ids)  # type: ignore[arg-type]


def _token_names(folder: Path) -> tuple[dict[str, str | None], str]:
    """role → token string, and the file that named them."""
    for name in ("tokenizer_config.json", "special_tokens_map.json"):
        data = _read_json(folder / name)
        if data is None:
            continue
        found = {role: _content(data.get(f"{role}_token")) for role in CRAM_TOKENS}
        missing = [role for role in REQUIRED if found[role] is None]
        if missing:
            raise CheckpointError(f"{folder / name}: names no {', '.join(f'{r}_token' for r in missing)}; add "
                             f"{' and '.join(repr(f'{r}_token') for r in missing)} (cram needs pad, cls, sep and mask)")
        return found, name
    return dict(CRAM_TOKENS), "tokenizer.json"


def _content(value: Any) -> str | None:
    """A special token as HF writes it: a string or an AddedToken dict with `content`."""
    if isinstance(value, dict):
        value = value.get("content")
    return value if isinstance(value, str) and value else None


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
        names, _ = _token_names(dest)
        config = {"tokenizer_class": "PreTrainedTokenizerFast",
                  **{f"{role}_token": token for role, token in names.items() if tok.token_to_id(token) is not None}}
        written.append("tokenizer_config.json")
    # The model cannot take more positions than its sinusoid table has rows, whatever the tokenizer said.
    config["model_max_length"] = model_max_length
    write_json(dest / "tokenizer_config.json", config)
    special_ids(dest)  # a tokenizer whose special tokens are not in its vocabulary fails here, not later
    return written
