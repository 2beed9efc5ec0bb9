"""HF-native checkpoints: `config.json` + `model.safetensors` (+ tokenizer files), and loading of cram's own
checkpoints, pretrain run folders and original cramming v1/v2 checkpoints (auto-detected from config.json).

Every problem with a folder becomes one `UsageError` line naming the file and what is wrong.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from cramcli.model import convert
from cramcli.model.config import CrammedBertConfig
from cramcli.model.modeling import (
    CrammedBertForMaskedLM,
    CrammedBertForSequenceClassification,
    CrammedBertModel,
    CrammedBertPreTrainedModel,
)
from cramcli.utils.atomic import atomic_dir, write_json
from cramcli.utils.errors import UsageError

WEIGHTS = "model.safetensors"
LEGACY_WEIGHTS = "pytorch_model.bin"
HEADS: dict[str, type[CrammedBertPreTrainedModel]] = {
    "mlm": CrammedBertForMaskedLM, "cls": CrammedBertForSequenceClassification, "base": CrammedBertModel}
_BY_CLASS = {cls.__name__: head for head, cls in HEADS.items()}
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt")
# cram's fixed special tokens (shared interface 1), for a tokenizer_config.json when the source has none.
_SPECIAL = {"pad_token": "<pad>", "bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>",
            "cls_token": "<cls>", "sep_token": "<sep>", "mask_token": "<mask>"}


@dataclass
class Source:
    """What `read_checkpoint` found: the config fields, the weights in cram's names, and where they came from."""

    folder: Path
    format: str
    """`cram`, `cramming-v1` or `cramming-v2`."""
    config: dict[str, Any]
    state: dict[str, torch.Tensor]
    weights_file: Path
    head: str
    """The head the checkpoint was saved with (`mlm`, `cls`, `base`)."""
    notes: list[str] = field(default_factory=list)


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
    """Write `out_dir` atomically: config.json, model.safetensors (fp32 unless the model is in another dtype;
    the tied decoder stored once, under the embedding) and the tokenizer files when given a tokenizer.json or
    a folder holding one. Refuses an existing `out_dir` unless `force`."""
    net = unwrap(model)
    tied = set(net._tied_weights_keys or {}) if isinstance(net._tied_weights_keys, dict) else set()
    state = {k: v.detach().cpu().contiguous() for k, v in net.state_dict().items() if k not in tied}
    config = net.config
    config.architectures = [type(net).__name__]
    with atomic_dir(Path(out_dir), force=force) as tmp:
        save_file(state, str(tmp / WEIGHTS), metadata={"format": "pt"})
        config.to_json_file(str(tmp / "config.json"))
        if tokenizer_path is not None:
            copy_tokenizer(Path(tokenizer_path), tmp, config.max_seq_length)
    return Path(out_dir)


def copy_tokenizer(source: Path, dest: Path, model_max_length: int) -> list[str]:
    """Copy tokenizer.json and its HF side files; write a tokenizer_config.json naming cram's special tokens
    when the source has none, so `AutoTokenizer.from_pretrained(checkpoint)` works. Returns the files written."""
    folder = source if source.is_dir() else source.parent
    main = source / "tokenizer.json" if source.is_dir() else source
    if not main.is_file():
        raise UsageError(f"{main}: tokenizer file not found")
    shutil.copyfile(main, dest / "tokenizer.json")
    written = ["tokenizer.json"]
    for name in TOKENIZER_FILES[1:]:
        if (folder / name).is_file():
            shutil.copyfile(folder / name, dest / name)
            written.append(name)
    if "tokenizer_config.json" not in written:
        write_json(dest / "tokenizer_config.json", {"tokenizer_class": "PreTrainedTokenizerFast",
                                                    "model_max_length": model_max_length, **_SPECIAL})
        written.append("tokenizer_config.json")
    return written


# ----------------------------------------------------------------------------------------------------------
# finding and reading


def resolve(path: Path) -> Path:
    """A checkpoint folder, or a pretrain run folder (→ its `final/`)."""
    path = Path(path)
    if not (path / "config.json").is_file() and (path / "final" / "config.json").is_file():
        return path / "final"
    return path


def is_checkpoint(path: Path) -> bool:
    """Cheap check: a folder (or run folder) with a config.json of a known model type and a weight file."""
    folder = resolve(Path(path))
    try:
        model_type = json.loads((folder / "config.json").read_text()).get("model_type")
    except (OSError, ValueError, AttributeError):
        return False
    has_weights = (folder / WEIGHTS).is_file() or (folder / LEGACY_WEIGHTS).is_file()
    return has_weights and model_type in (CrammedBertConfig.model_type, convert.ORIGINAL_MODEL_TYPE)


def read_checkpoint(path: Path) -> Source:
    """Read any supported checkpoint into cram's names (no model is built). Raises UsageError otherwise."""
    folder = resolve(Path(path))
    if not folder.exists():
        raise UsageError(f"{folder}: no such folder; pass a checkpoint folder (config.json + model.safetensors)")
    if not folder.is_dir():
        raise UsageError(f"{folder}: not a folder; pass the checkpoint folder that holds config.json")
    config_file = folder / "config.json"
    if not config_file.is_file():
        present = ", ".join(sorted(p.name for p in folder.iterdir())[:6]) or "nothing"
        raise UsageError(f"{folder}: not a checkpoint folder (no config.json; found {present}); "
                         "a checkpoint is what `cram pretrain` writes to RUN/final")
    try:
        raw = json.loads(config_file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise UsageError(f"{config_file}: not valid JSON ({exc})") from None
    if not isinstance(raw, dict):
        raise UsageError(f"{config_file}: expected a JSON object")
    model_type = raw.get("model_type")
    if model_type == CrammedBertConfig.model_type:
        return _read_own(folder, raw)
    if model_type == convert.ORIGINAL_MODEL_TYPE:
        return _read_original(folder, raw)
    raise UsageError(f"{config_file}: unknown model_type {model_type!r}; cram reads {CrammedBertConfig.model_type!r}"
                     f" (its own) and {convert.ORIGINAL_MODEL_TYPE!r} (original cramming v1/v2)")


def _read_own(folder: Path, raw: dict[str, Any]) -> Source:
    config = {k: v for k, v in raw.items() if k not in ("model_type", "transformers_version", "architectures")}
    head = next((_BY_CLASS[n] for n in raw.get("architectures") or [] if n in _BY_CLASS), "mlm")
    state = _load_weights(folder / WEIGHTS)
    return Source(folder, "cram", config, state, folder / WEIGHTS, head)


def _read_original(folder: Path, raw: dict[str, Any]) -> Source:
    config_file = folder / "config.json"
    try:
        config = convert.original_config(raw)
    except convert.ImportProblem as exc:
        raise UsageError(f"{config_file}: {exc}") from None
    weights = folder / WEIGHTS if (folder / WEIGHTS).is_file() else folder / LEGACY_WEIGHTS
    source = _load_weights(weights)
    head_size = config["hidden_size"] // max(1, config["num_heads"])
    try:
        state = convert.original_state_dict(source, config["num_heads"], head_size)
    except convert.ImportProblem as exc:
        raise UsageError(f"{weights}: {exc}") from None
    head = "cls" if "classifier.weight" in state else "mlm"
    fmt = f"cramming-{config['layout']}"
    notes = [f"original attention {raw['arch']['attention']['type']!r} → cram backend {config['attention']!r}"]
    return Source(folder, fmt, config, state, weights, head, notes)


def _load_weights(file: Path) -> dict[str, torch.Tensor]:
    if not file.is_file():
        raise UsageError(f"{file}: weight file missing (expected {WEIGHTS} or {LEGACY_WEIGHTS} beside config.json)")
    try:
        if file.suffix == ".safetensors":
            state = load_file(str(file))
        else:
            state = torch.load(file, map_location="cpu", weights_only=True)
    except (SafetensorError, OSError, RuntimeError, EOFError, ValueError) as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise UsageError(f"{file}: cannot read the weights, the file is truncated or corrupt ({reason})") from None
    except Exception as exc:  # unpickling a non-state-dict raises assorted types (UnpicklingError, ...)
        raise UsageError(f"{file}: not a weight file ({type(exc).__name__})") from None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise UsageError(f"{file}: not a state dict of tensors")
    bad = [k for k, v in state.items() if v.is_floating_point() and not bool(torch.isfinite(v).all())]
    if bad:
        raise UsageError(f"{file}: tensor {bad[0]} holds NaN/inf values{f' (and {len(bad) - 1} more)' if len(bad) > 1 else ''}")
    return state


# ----------------------------------------------------------------------------------------------------------
# building models


def build_config(source: Source, num_labels: int | None = None, **overrides: Any) -> CrammedBertConfig:
    fields = dict(source.config)
    if num_labels is not None:
        fields.pop("id2label", None)
        fields.pop("label2id", None)
        fields["num_labels"] = num_labels
    fields.update(overrides)
    try:
        return CrammedBertConfig(**fields)
    except (TypeError, ValueError) as exc:
        raise UsageError(f"{source.folder / 'config.json'}: {str(exc).splitlines()[0]}") from None


def build_model(source: Source, head: str | None = None, num_labels: int | None = None,
                **overrides: Any) -> CrammedBertPreTrainedModel:
    """A model with the checkpoint's weights; every loaded tensor is checked to equal its source afterwards.

    The encoder must be complete; head weights are loaded when present and shape-compatible (a classification
    head is freshly initialised from an MLM checkpoint, or when num_labels changes)."""
    head = head or source.head
    if head not in HEADS:
        raise UsageError(f"head {head!r}: choose one of {', '.join(HEADS)}")
    config = build_config(source, num_labels, **overrides)
    model = HEADS[head](config)
    state = dict(source.state)
    if head == "base":
        state = {k.removeprefix("encoder."): v for k, v in state.items() if k.startswith("encoder.")}
    expected = model.state_dict()
    tied = set(model._tied_weights_keys or {}) if isinstance(model._tied_weights_keys, dict) else set()
    wanted = {k for k in expected if k not in tied}
    # What must be in the checkpoint: everything for mlm/base, the encoder for a (possibly fresh) classifier.
    required = {k for k in wanted if k.startswith("encoder.")} if head == "cls" else wanted
    missing = sorted(required - set(state))
    if missing:
        raise UsageError(f"{source.weights_file}: tensor {missing[0]} is missing"
                         f"{f' (and {len(missing) - 1} more)' if len(missing) > 1 else ''}; incomplete checkpoint")
    load = {}
    for name, tensor in state.items():
        if name not in wanted:
            continue  # e.g. the MLM head when a classifier is built
        if tuple(tensor.shape) != tuple(expected[name].shape):
            if name in required:
                raise UsageError(f"{source.weights_file}: tensor {name} has shape {list(tensor.shape)} but "
                                 f"config.json implies {list(expected[name].shape)}")
            continue  # a head of another size (num_labels changed): keep the fresh init
        load[name] = tensor
    model.load_state_dict(load, strict=False)
    # Recipe §6: never trust a load blindly, check every tensor arrived unchanged.
    after = model.state_dict()
    changed = [k for k, v in load.items() if not torch.equal(after[k], v.to(after[k].dtype))]
    if changed:
        raise UsageError(f"{source.weights_file}: tensor {changed[0]} did not load unchanged")
    return model.eval()


def load_pretrained(path: Path, head: str = "mlm", num_labels: int | None = None,
                    **config_overrides: Any) -> CrammedBertPreTrainedModel:
    """Load cram's own checkpoint, a pretrain run folder (its `final/`) or an original cramming v1/v2 checkpoint.

    `head`: `mlm` (CrammedBertForMaskedLM), `cls` (CrammedBertForSequenceClassification, `num_labels`) or `base`
    (the encoder). Keyword overrides change config fields, e.g. `attention="reference"`, dropouts,
    `legacy_ignore_padding=True`. The model is returned in eval mode on the CPU."""
    return build_model(read_checkpoint(Path(path)), head, num_labels, **config_overrides)
