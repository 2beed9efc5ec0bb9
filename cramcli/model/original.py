"""Reading the original cramming checkpoints into cram's names (the renaming itself is model/convert.py):

- hub layout (v1 legacy, v2): `config.json` (model_type `crammedBERT`, the arch under `arch`) +
  `pytorch_model.bin` (v1) or `model.safetensors` (v2);
- run layout: `RUN/checkpoints/<id>/` as the original's final-checkpoint writer leaves it: `model_config.json`
  (the bare arch dict) + `model.safetensors` (v2) or `model.pth` (v1) + its tokenizer.
"""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file

from cramcli.model import convert
from cramcli.model.errors import CheckpointError
from cramcli.model.source import Source, check_finite
from cramcli.model.tokenizer import checkpoint_special_ids, load_tokenizer
from cramcli.utils.jsonfile import read_object

WEIGHTS = "model.safetensors"
HUB_V1_WEIGHTS = "pytorch_model.bin"
RUN_V1_WEIGHTS = "model.pth"
RUN_CONFIG = "model_config.json"
_EMBEDDING, _DECODER = "encoder.embedding.word_embedding.weight", "decoder.weight"


def read_hub_original(folder: Path, config_file: Path, raw: dict[str, Any]) -> Source:
    """The hub layout: the arch under `arch` in config.json, the weights beside it."""
    arch = raw.get("arch")
    weights = folder / WEIGHTS if (folder / WEIGHTS).is_file() else folder / HUB_V1_WEIGHTS
    return _read_original(folder, config_file, arch if isinstance(arch, dict) else None, weights)


def read_original_run(folder: Path) -> Source:
    """An original run's `checkpoints/<id>/`: the bare arch dict has no vocab size (the original took it from
    the tokenizer), so it is read from the embedding; the tokenizer is required."""
    config_file = folder / RUN_CONFIG
    arch = read_object(config_file, fix="restore the checkpoint's own file", error=CheckpointError)
    weights = next((folder / n for n in (WEIGHTS, RUN_V1_WEIGHTS) if (folder / n).is_file()), None)
    if weights is None:
        raise CheckpointError(f"{folder}: neither {WEIGHTS} (v2) nor {RUN_V1_WEIGHTS} (v1) beside {RUN_CONFIG}; "
                              "copy the weights file the original run saved into this folder")
    if not (folder / "tokenizer.json").is_file():
        raise CheckpointError(f"{folder / 'tokenizer.json'}: missing; the original run saved its tokenizer beside "
                              f"{RUN_CONFIG} (tokenizer.json, tokenizer_config.json, special_tokens_map.json): "
                              "copy those files into this folder")
    return _read_original(folder, config_file, arch, weights)


def _read_original(folder: Path, config_file: Path, arch: dict[str, Any] | None, weights: Path) -> Source:
    if arch is None:
        raise CheckpointError(f"{config_file}: model_type crammedBERT but no `arch` object")
    state = {_strip_wrappers(k): v for k, v in _load_weights(weights).items()}
    embedding = dict(arch.get("embedding") or {})
    rows = next((state[k].shape[0] for k in (_EMBEDDING, _DECODER) if k in state), None)
    if embedding.get("vocab_size") is None and rows is not None:
        embedding["vocab_size"] = rows
    notes = [f"original attention {(arch.get('attention') or {}).get('type')!r}"]
    special = None
    if (folder / "tokenizer.json").is_file():
        tok = load_tokenizer(folder)
        special = checkpoint_special_ids(folder, tok)
        if rows is not None and tok.get_vocab_size() > rows:
            raise CheckpointError(f"{folder / 'tokenizer.json'}: {tok.get_vocab_size()} tokens but the embedding in "
                                  f"{weights.name} has {rows} rows; put the run's own tokenizer beside the weights")
        said = embedding.get("pad_token_id", 0)
        # The original never wrote the tokenizer's pad id into the arch: 0 is its default whatever the tokenizer.
        if said not in (0, special.pad):
            raise CheckpointError(f"{config_file}: embedding.pad_token_id {said} but tokenizer.json's pad token is "
                                  f"{special.pad}; put the run's own tokenizer beside the weights, or set "
                                  f"pad_token_id to {special.pad}")
        if said != special.pad:
            notes.append(f"pad id {special.pad} from the tokenizer ({config_file.name} says {said}, the original's "
                         "default it wrote whatever the tokenizer)")
        embedding["pad_token_id"] = special.pad
    try:
        config = convert.original_config({"arch": {**arch, "embedding": embedding}})
    except convert.ImportProblem as exc:
        raise CheckpointError(f"{config_file}: {exc}") from None
    try:
        renamed = convert.original_state_dict(state, config["num_heads"],
                                              config["hidden_size"] // max(1, config["num_heads"]))
    except convert.ImportProblem as exc:
        raise CheckpointError(f"{weights}: {exc}") from None
    if special is not None:
        config.update(special.config_fields())
    notes[0] += f" → cram backend {config['attention']!r}"
    head = "cls" if "classifier.weight" in renamed else "mlm"
    return Source(folder, f"cramming-{config['layout']}", config, weights, head, special, renamed, notes)


def _strip_wrappers(name: str) -> str:
    """State-dict keys as DDP (`module.`) or torch.compile (`_orig_mod.`) saved them → the bare model's."""
    for prefix in ("module.", "_orig_mod."):
        name = name.removeprefix(prefix)
    return name


def _load_weights(file: Path) -> dict[str, torch.Tensor]:
    try:
        if file.suffix == ".safetensors":
            state = load_file(str(file))
        else:
            state = torch.load(file, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise CheckpointError(f"{file}: weight file missing (expected {WEIGHTS} or {HUB_V1_WEIGHTS} beside "
                              "config.json)") from None
    except pickle.UnpicklingError:  # weights_only=True met something other than tensors and plain values
        raise CheckpointError(f"{file}: refused: loading it would run code or build objects a weight file never "
                              "holds; nothing was executed — use the checkpoint's model.safetensors, or a trusted "
                              "copy of this file") from None
    except (SafetensorError, OSError, RuntimeError, EOFError, ValueError) as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise CheckpointError(f"{file}: cannot read the weights, the file is truncated or corrupt ({reason})") from None
    except Exception as exc:  # unpickling a non-state-dict raises assorted types (UnpicklingError, ...)
        raise CheckpointError(f"{file}: not a weight file ({type(exc).__name__})") from None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(f"{file}: not a state dict of tensors")
    check_finite(file, state.items())
    return state
