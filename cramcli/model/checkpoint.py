"""Checkpoint folders: cram's own, written and read with transformers' `save_pretrained` / `from_pretrained`;
finding the checkpoint a path means (`resolve`, `find_checkpoint`); building models from what was read.

What `read_checkpoint` accepts (`resolve` finds the checkpoint inside a run folder):
- cram: `config.json` (model_type `cram-bert`) + `model.safetensors` + the tokenizer files; `cram pretrain`
  writes one to `RUN/final/`.
- the original cramming layouts (hub and run), read into cram's names by `model/original.py`.

Special-token ids come from the checkpoint's tokenizer (the one rule: `cramcli/data/tokenizer.special_ids`); a
config that names other ids is refused. Problems raise `CheckpointError` (a ValueError) naming the file and the fix.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from torch import nn

from cramcli.model import convert, original
from cramcli.model.config import CrammedBertConfig
from cramcli.model.errors import CheckpointError
from cramcli.model.modeling import (
    CrammedBertForMaskedLM,
    CrammedBertForSequenceClassification,
    CrammedBertModel,
    CrammedBertPreTrainedModel,
)
from cramcli.model.original import HUB_V1_WEIGHTS, RUN_CONFIG, RUN_V1_WEIGHTS, WEIGHTS
from cramcli.model.source import Source, check_finite
from cramcli.model.tokenizer import TOKENIZER_FILES, checkpoint_special_ids, copy_tokenizer, load_tokenizer
from cramcli.utils import disk
from cramcli.utils.atomic import atomic_dir
from cramcli.utils.jsonfile import read_object

__all__ = ["TOKENIZER_FILES", "CheckpointError", "Source", "build_model", "find_checkpoint", "is_checkpoint",
           "load_pretrained", "load_tokenizer", "read_checkpoint", "resolve", "save_checkpoint", "checkpoint_special_ids",
           "unwrap"]

HEADS: dict[str, type[CrammedBertPreTrainedModel]] = {
    "mlm": CrammedBertForMaskedLM, "cls": CrammedBertForSequenceClassification, "base": CrammedBertModel}
_BY_CLASS = {cls.__name__: head for head, cls in HEADS.items()}


# ----------------------------------------------------------------------------------------------------------
# saving


def unwrap(model: nn.Module) -> CrammedBertPreTrainedModel:
    """The crammed BERT inside DDP (`.module`) and torch.compile (`._orig_mod`) wrappers."""
    while not isinstance(model, CrammedBertPreTrainedModel):
        inner = getattr(model, "module", None) or getattr(model, "_orig_mod", None)
        if inner is None:
            raise TypeError(f"not a crammed BERT model: {type(model).__name__}")
        model = inner
    return model


def save_checkpoint(model: nn.Module, out_dir: Path, tokenizer_path: Path | None = None, *,
                    force: bool = False) -> Path:
    """Write `out_dir` atomically with `save_pretrained` (config.json + model.safetensors, in the model's dtype,
    the tied decoder stored once under the embedding) and the tokenizer files when given a tokenizer.json or a
    folder holding one. The saved config carries that tokenizer's pad/cls/sep/mask ids (the model's config
    object is updated to them). Refuses an existing `out_dir` unless `force`."""
    net = unwrap(model)
    with atomic_dir(Path(out_dir), force=force) as tmp:
        if tokenizer_path is not None:
            copy_tokenizer(Path(tokenizer_path), tmp, net.config.max_seq_length)
            tok = load_tokenizer(tmp)
            if tok.get_vocab_size() > net.config.vocab_size:
                raise CheckpointError(f"{tokenizer_path}: {tok.get_vocab_size()} tokens but the model has "
                                      f"{net.config.vocab_size} embedding rows; save it with the tokenizer it was "
                                      "trained with")
            for name, value in checkpoint_special_ids(tmp, tok).config_fields().items():
                setattr(net.config, name, value)
        with quiet_transformers(), disk.os_errors(Path(out_dir) / WEIGHTS):
            net.save_pretrained(tmp)
    return Path(out_dir)


@contextmanager
def quiet_transformers() -> Iterator[None]:
    """No transformers progress bars or load reports inside cram's own output; cram checks the load itself."""
    from transformers.utils import logging as hf_logging

    verbosity, bars = hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        hf_logging.set_verbosity(verbosity)
        if bars:
            hf_logging.enable_progress_bar()


# ----------------------------------------------------------------------------------------------------------
# finding


def _has_config(folder: Path) -> bool:
    return (folder / "config.json").is_file() or (folder / RUN_CONFIG).is_file()


def resolve(path: Path) -> Path:
    """The checkpoint folder a path means: itself, a cram run's `final/`, or an original run's latest
    `checkpoints/<id>/` (latest by modification time, the original's `eval.checkpoint=latest` rule)."""
    path = Path(path)
    if _has_config(path):
        return path
    if _has_config(path / "final"):
        return path / "final"
    runs = path / "checkpoints"
    candidates = [p for p in runs.iterdir() if (p / RUN_CONFIG).is_file()] if runs.is_dir() else []
    return max(candidates, key=lambda p: p.stat().st_mtime) if candidates else path


def is_checkpoint(path: Path) -> bool:
    """Cheap check: `resolve(path)` holds a config of a known kind and a weight file beside it."""
    folder = resolve(Path(path))
    if (folder / "config.json").is_file():
        try:
            model_type = json.loads((folder / "config.json").read_text()).get("model_type")
        except (OSError, ValueError, AttributeError):
            return False
        has_weights = (folder / WEIGHTS).is_file() or (folder / HUB_V1_WEIGHTS).is_file()
        return has_weights and model_type in (CrammedBertConfig.model_type, convert.ORIGINAL_MODEL_TYPE)
    return (folder / RUN_CONFIG).is_file() and ((folder / WEIGHTS).is_file() or (folder / RUN_V1_WEIGHTS).is_file())


def find_checkpoint(path: Path, *, cram_only: bool = False) -> Path:
    """`resolve(path)`, checked to be a loadable checkpoint (config, weights, tokenizer agree). `cram_only`
    refuses the original cramming layouts (before reading their weights), naming the command that imports them."""
    if cram_only:
        folder = resolve(Path(path))
        config = folder / "config.json"
        model_type = _read_json(config).get("model_type") if config.is_file() else None
        if (folder / RUN_CONFIG).is_file() or model_type == convert.ORIGINAL_MODEL_TYPE:
            raise CheckpointError(f"{folder}: an original cramming checkpoint, not cram's own; import it first with "
                                  f"`cram convert {path} --attention pytorch`")
    return read_checkpoint(path).folder


# ----------------------------------------------------------------------------------------------------------
# reading


def read_checkpoint(path: Path) -> Source:
    """Read any supported checkpoint (no model is built; original weights are renamed into cram's names)."""
    folder = resolve(Path(path))
    if not folder.exists():
        raise CheckpointError(f"{folder}: no such folder; pass a checkpoint folder (config.json + model.safetensors)")
    if not folder.is_dir():
        raise CheckpointError(f"{folder}: not a folder; pass the checkpoint folder that holds config.json")
    if not (folder / "config.json").is_file() and (folder / RUN_CONFIG).is_file():
        return original.read_original_run(folder)
    config_file = folder / "config.json"
    if not config_file.is_file():
        present = ", ".join(sorted(p.name for p in folder.iterdir())[:6]) or "nothing"
        raise CheckpointError(f"{folder}: not a checkpoint folder (no config.json; found {present}); a checkpoint "
                              "is what `cram pretrain` writes to RUN/final, or an original run's checkpoints/<id>/")
    raw = _read_json(config_file)
    model_type = raw.get("model_type")
    if model_type == CrammedBertConfig.model_type:
        return _read_own(folder, raw)
    if model_type == convert.ORIGINAL_MODEL_TYPE:
        return original.read_hub_original(folder, config_file, raw)
    raise CheckpointError(f"{config_file}: unknown model_type {model_type!r}; cram reads "
                          f"{CrammedBertConfig.model_type!r} (its own) and {convert.ORIGINAL_MODEL_TYPE!r} "
                          "(original cramming v1/v2)")


def _read_json(file: Path) -> dict[str, Any]:
    return read_object(file, fix="restore the checkpoint's own file", error=CheckpointError)


def _read_own(folder: Path, raw: dict[str, Any]) -> Source:
    fields = {k: v for k, v in raw.items() if k not in ("model_type", "transformers_version", "architectures")}
    head = next((_BY_CLASS[n] for n in raw.get("architectures") or [] if n in _BY_CLASS), "mlm")
    config = _config(fields, folder / "config.json")
    special = None
    if (folder / "tokenizer.json").is_file():
        special = checkpoint_special_ids(folder)
        wrong = [f"{name} {getattr(config, name)} (tokenizer: {value})" for name, value in
                 special.config_fields().items() if getattr(config, name) not in (None, value)]
        if wrong:
            raise CheckpointError(f"{folder / 'config.json'}: special-token ids disagree with tokenizer.json: "
                                  f"{', '.join(wrong)}; put the model's own tokenizer beside it, or set those "
                                  "ids in config.json to the tokenizer's")
    _check_own_weights(folder / WEIGHTS, _expected_shapes(config, head))
    return Source(folder, "cram", fields, folder / WEIGHTS, head, special)


def _expected_shapes(config: CrammedBertConfig, head: str) -> dict[str, tuple[int, ...]]:
    """Shapes of the tensors a checkpoint of this config and head stores (built on the meta device: no memory)."""
    with torch.device("meta"):
        model = HEADS[head](config)
    tied = _tied(model)
    return {k: tuple(v.shape) for k, v in model.state_dict().items() if k not in tied}


def _tied(model: CrammedBertPreTrainedModel) -> set[str]:
    """Tensors stored once under another name: the decoder, unless the config unties it."""
    keys = model._tied_weights_keys
    return set(keys) if isinstance(keys, dict) and model.config.tie_word_embeddings else set()


def _check_own_weights(file: Path, expected: dict[str, tuple[int, ...]]) -> None:
    """From the safetensors header only: the file opens and holds every tensor in the shape config.json implies."""
    if not file.is_file():
        raise CheckpointError(f"{file}: weight file missing (expected {WEIGHTS} beside config.json)")
    try:
        with safe_open(str(file), "pt") as handle:
            shapes = {k: tuple(handle.get_slice(k).get_shape()) for k in handle.keys()}  # noqa: SIM118
    except (SafetensorError, OSError) as exc:
        raise CheckpointError(f"{file}: cannot read the weights, the file is truncated or corrupt "
                              f"({str(exc).splitlines()[0] if str(exc) else type(exc).__name__})") from None
    missing = sorted(set(expected) - set(shapes))
    if missing:
        raise CheckpointError(f"{file}: tensor {missing[0]} is missing"
                              f"{f' (and {len(missing) - 1} more)' if len(missing) > 1 else ''}; incomplete checkpoint")
    for name, shape in expected.items():
        if shapes[name] != shape:
            raise CheckpointError(f"{file}: tensor {name} has shape {list(shapes[name])} but config.json implies "
                                  f"{list(shape)}")


# ----------------------------------------------------------------------------------------------------------
# building models


def _config(fields: dict[str, Any], file: Path) -> CrammedBertConfig:
    try:
        return CrammedBertConfig(**fields)
    except (TypeError, ValueError) as exc:
        raise CheckpointError(f"{file}: {str(exc).splitlines()[0]}") from None


def build_config(source: Source, num_labels: int | None = None, **overrides: Any) -> CrammedBertConfig:
    fields = dict(source.config)
    if num_labels is not None:
        fields.pop("id2label", None)
        fields.pop("label2id", None)
        fields["num_labels"] = num_labels
    fields.update(overrides)
    return _config(fields, source.folder / ("config.json" if (source.folder / "config.json").is_file() else RUN_CONFIG))


def build_model(source: Source, head: str | None = None, num_labels: int | None = None,
                **overrides: Any) -> CrammedBertPreTrainedModel:
    """A model with the checkpoint's weights, in eval mode on the CPU; every loaded tensor is checked to equal
    its source afterwards (recipe §6: never trust a load blindly).

    The encoder must be complete; head weights are loaded when present and shape-compatible (a classification
    head is freshly initialised from an MLM checkpoint, or when num_labels changes)."""
    head = head or source.head
    if head not in HEADS:
        raise ValueError(f"head {head!r}: choose one of {', '.join(HEADS)}")
    config = build_config(source, num_labels, **overrides)
    if source.state is None:
        model = _from_pretrained(source, head, config)
    else:
        model = HEADS[head](config)
        _load_state(model, source, head)
    return model.eval()


def _from_pretrained(source: Source, head: str, config: CrammedBertConfig) -> CrammedBertPreTrainedModel:
    """cram's own format: transformers' from_pretrained, then every stored tensor compared with the model's."""
    with quiet_transformers():
        model, info = HEADS[head].from_pretrained(source.folder, config=config, ignore_mismatched_sizes=True,
                                                  use_safetensors=True,  # never a pickle, whatever sits beside
                                                  output_loading_info=True)
    missing = sorted(k for k in info["missing_keys"] if k.startswith("encoder.") or head != "cls")
    if missing:
        raise CheckpointError(f"{source.weights_file}: tensor {missing[0]} is missing; incomplete checkpoint")
    after = model.state_dict()
    with safe_open(str(source.weights_file), "pt") as handle:
        for name in handle.keys():  # noqa: SIM118
            stored = handle.get_tensor(name)
            check_finite(source.weights_file, [(name, stored)])
            mine = name.removeprefix("encoder.") if head == "base" else name
            if mine in after and after[mine].shape == stored.shape and not torch.equal(after[mine],
                                                                                        stored.to(after[mine].dtype)):
                raise CheckpointError(f"{source.weights_file}: tensor {name} did not load unchanged")
    return model


def _load_state(model: CrammedBertPreTrainedModel, source: Source, head: str) -> None:
    """Original checkpoints: their renamed weights into a freshly built model, checked tensor by tensor."""
    state = dict(source.state or {})
    if head == "base":
        state = {k.removeprefix("encoder."): v for k, v in state.items() if k.startswith("encoder.")}
    expected = model.state_dict()
    wanted = {k for k in expected if k not in _tied(model)}
    # What must be in the checkpoint: everything for mlm/base, the encoder for a (possibly fresh) classifier.
    required = {k for k in wanted if k.startswith("encoder.")} if head == "cls" else wanted
    missing = sorted(required - set(state))
    if missing:
        raise CheckpointError(f"{source.weights_file}: tensor {missing[0]} is missing"
                              f"{f' (and {len(missing) - 1} more)' if len(missing) > 1 else ''}; incomplete checkpoint")
    load = {}
    for name, tensor in state.items():
        if name not in wanted:
            continue  # e.g. the MLM head when a classifier is built
        if tuple(tensor.shape) != tuple(expected[name].shape):
            if name in required:
                raise CheckpointError(f"{source.weights_file}: tensor {name} has shape {list(tensor.shape)} but "
                                      f"the config implies {list(expected[name].shape)}")
            continue  # a head of another size (num_labels changed): keep the fresh init
        load[name] = tensor
    model.load_state_dict(load, strict=False)
    after = model.state_dict()
    changed = [k for k, v in load.items() if not torch.equal(after[k], v.to(after[k].dtype))]
    if changed:
        raise CheckpointError(f"{source.weights_file}: tensor {changed[0]} did not load unchanged")


def load_pretrained(path: Path, head: str = "mlm", num_labels: int | None = None,
                    **config_overrides: Any) -> CrammedBertPreTrainedModel:
    """Load cram's own checkpoint, a run folder (cram's `final/`, an original run's latest checkpoint) or an
    original cramming v1/v2 checkpoint.

    `head`: `mlm` (CrammedBertForMaskedLM), `cls` (CrammedBertForSequenceClassification, `num_labels`) or `base`
    (the encoder). Keyword overrides change config fields, e.g. `attention="reference"`, dropouts,
    `legacy_ignore_padding=True`. The model is returned in eval mode on the CPU."""
    return build_model(read_checkpoint(Path(path)), head, num_labels, **config_overrides)
