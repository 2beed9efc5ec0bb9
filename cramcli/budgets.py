"""Budgets: the JSON files in `budgets/` that fix everything a stage does, validated by pydantic.

Four kinds, one model each: `DataBudget` (prepare-data), `ArchBudget` (the model), `TrainBudget` (pretrain) and
`GlueBudget` (finetune-glue). A budget is named on the command line by a preset name (`24`, `v2`, `demo`) that
resolves to `budgets/<kind>_budget_<name>.json` (`24` → `hours_24`), or by a path to a JSON file.
Every problem in a file is reported as one line `file: field.path: message (allowed: ...)`.
"""

from __future__ import annotations

import copy
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from cramcli.utils.errors import UsageError

KINDS = ("data", "arch", "train", "glue")
GLUE_TASKS = ("cola", "sst2", "mrpc", "qqp", "stsb", "mnli", "qnli", "rte", "wnli")

Rate = Annotated[float, Field(gt=0.0, lt=1.0)]
Fraction = Annotated[float, Field(ge=0.0, le=1.0)]
PositiveInt = Annotated[int, Field(gt=0, le=10**12)]
PositiveFloat = Annotated[float, Field(gt=0.0, le=1e12)]


class _Strict(BaseModel):
    """Unknown keys are errors (a typo must not silently fall back to a default); field docs become help text."""

    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True, frozen=True)


# ----------------------------------------------------------------------------------------------------------
# data


class NormalizationBudget(_Strict):
    nfd: bool = True
    """Unicode NFD decomposition before the other steps (so accents become separate combining marks)."""
    lowercase: bool = True
    """Lower-case all text (uncased model, as the recipe)."""
    strip_accents: bool = True
    """Remove combining accent marks after NFD."""
    ascii_only: bool = True
    """Delete every remaining non-ASCII character (the recipe's `force_english_keyboard`)."""
    normalize_quotes: bool = True
    """Replace the LaTeX-style quotes `` and '' by a plain double quote."""
    collapse_whitespace: bool = True
    """Collapse runs of spaces into one."""


class FilterBudget(_Strict):
    enabled: bool = True
    """Drop documents that compress badly (junk, tables, lists of numbers, non-English residue)."""
    max_tokens_per_char: Rate = 0.25
    """Keep a document only if tokens/characters is below this (the recipe keeps > 4 characters per token)."""
    min_chars: Annotated[int, Field(ge=0, le=10**9)] = 0
    """Drop documents shorter than this many characters after normalisation."""
    tokenizer: str | None = None
    """Tokenizer that measures compressibility on the raw text, before normalisation and tokenizer training, as
    the original did with `albert-base-v2`: a `tokenizer.json` file (or a folder holding one) or a hub id
    (`hf:albert-base-v2`; fetched once, then cached). Unset (offline default, a deviation): cram's own tokenizer
    measures the normalised text after it is trained."""


class DedupBudget(_Strict):
    exact: bool = True
    """Drop documents whose normalised text is identical to an earlier one."""
    near: bool = True
    """Drop near-duplicates found by MinHash LSH over word shingles."""
    near_threshold: Rate = 0.8
    """Estimated Jaccard similarity above which a document counts as a near-duplicate."""
    num_perm: Annotated[int, Field(ge=16, le=1024)] = 128
    """MinHash permutations (more = more precise, slower)."""
    shingle_words: Annotated[int, Field(ge=1, le=32)] = 5
    """Words per shingle."""


class TokenizerBudget(_Strict):
    vocab_size: Annotated[int, Field(ge=64, le=2**20)] = 32768
    """WordPiece vocabulary size, special tokens included."""
    min_frequency: Annotated[int, Field(ge=1, le=10**9)] = 2
    """A merge must be seen this often to enter the vocabulary."""
    max_training_documents: PositiveInt = 2_000_000
    """Cap on the documents fed to the tokenizer trainer (it holds word counts in RAM)."""


class ValidationBudget(_Strict):
    share: Annotated[float, Field(ge=0.0, lt=1.0)] = 0.005
    """Share of the kept documents set aside, whole, as the held-out split `cram pretrain` evaluates (0 = none).
    Chosen by the seed; packed into their own rows, so no training row holds held-out text."""
    max_rows: Annotated[int, Field(ge=0, le=10**9)] = 2048
    """Cap on held-out rows (0 = none): documents chosen beyond it go back to training. A pre-tokenized corpus
    with a `validation` split of its own takes at most this many rows from it instead."""


class DataBudget(_Strict):
    source: str = "hf:allenai/c4:en"
    """Where raw text comes from: `hf:NAME[:CONFIG]` (HF hub, streamed), a local file or folder, or `embedded`."""
    split: str = "train"
    """Dataset split for hub sources."""
    text_field: str = "text"
    """Name of the text column in hub datasets, JSON lines and parquet files."""
    max_documents: PositiveInt = 25_000_000
    """Read at most this many raw documents from the source."""
    seed: Annotated[int, Field(ge=0, le=2**32 - 1)] = 89
    """Seed for every random choice in preparation: the document shuffle and the `random` ordering."""
    shuffle: bool = True
    """Shuffle the documents once before tokenizer training and packing, as the original did (seed 89): the
    kept documents come in the order of NumPy `default_rng(seed).permutation(documents read)` (what
    `datasets.Dataset.shuffle(seed=seed)` does), dropped ones left out. Pre-tokenized corpora keep their order."""
    normalization: NormalizationBudget = NormalizationBudget()
    filter: FilterBudget = FilterBudget()
    dedup: DedupBudget = DedupBudget()
    tokenizer: TokenizerBudget = TokenizerBudget()
    seq_length: Annotated[int, Field(ge=8, le=65536)] = 128
    """Tokens per packed row."""
    ordering: Literal["sentence-ends", "random", "unigram", "none"] = "sentence-ends"
    """Row order: most sentence ends first (recipe), random, rarest-tokens first (unigram) or as read."""
    max_rows: PositiveInt = 85_000_000
    """Keep at most this many rows after ordering."""
    validation: ValidationBudget = ValidationBudget()
    """The held-out split (not in the original recipe, which had none; `share: 0` reproduces its rows exactly)."""


# ----------------------------------------------------------------------------------------------------------
# arch


class ClassifierBudget(_Strict):
    pooler: Literal["zero_index", "avg"] = "zero_index"
    """How the sequence is pooled for classification: the first position (GLUE-sane) or the mean."""
    head_dim: PositiveInt = 1024
    """Width of the dense layer of the classification head."""
    dropout: Fraction = 0.1
    """Dropout before the final classifier layer."""


class ArchBudget(_Strict):
    layout: Literal["v1", "v2"] = "v1"
    """`v1`: crammed-bert-legacy (c5) with a bare 768×768 prediction head; `v2`: no prediction head."""
    num_layers: Annotated[int, Field(ge=1, le=1024)] = 16
    hidden_size: Annotated[int, Field(ge=1, le=65536)] = 768
    num_heads: Annotated[int, Field(ge=1, le=1024)] = 12
    intermediate_size: Annotated[int, Field(ge=2, le=262144)] = 3072
    """Width of the FFN input projection; gated, so the output projection reads half of it."""
    vocab_size: Annotated[int, Field(ge=8, le=2**20)] = 32768
    max_seq_length: Annotated[int, Field(ge=8, le=65536)] = 128
    norm_eps: Annotated[float, Field(gt=0.0, lt=1.0)] = 1e-12
    hidden_dropout: Fraction = 0.1
    attention_dropout: Fraction = 0.1
    embedding_dropout: Fraction = 0.1
    init_std: Annotated[float, Field(gt=0.0, le=1.0)] = 0.02
    attention: Literal["pytorch", "flash", "reference"] = "pytorch"
    """Attention backend: torch SDPA (everywhere), flash-attn (CUDA only) or the plain reference."""
    sparse_prediction: Literal["off", "dynamic", "static"] = "dynamic"
    """Decode only masked positions: their exact count (`dynamic`, v1) or a fixed share of every row (`static`,
    v2; shapes stay constant for torch.compile)."""
    classifier: ClassifierBudget = ClassifierBudget()

    @model_validator(mode="after")
    def _heads_divide_hidden(self) -> ArchBudget:
        if self.hidden_size % self.num_heads:
            raise ValueError(
                f"hidden_size {self.hidden_size} must be divisible by num_heads {self.num_heads}"
                f" (allowed num_heads: {_divisors(self.hidden_size)})"
            )
        if self.intermediate_size % 2:
            raise ValueError(f"intermediate_size {self.intermediate_size} must be even (the gated FFN splits it)")
        return self


def _divisors(n: int) -> str:
    divs = [d for d in range(1, min(n, 64) + 1) if n % d == 0]
    return ", ".join(map(str, divs))


# ----------------------------------------------------------------------------------------------------------
# train


class OptimizerBudget(_Strict):
    lr: Annotated[float, Field(gt=0.0, lt=1.0)] = 1e-3
    """Peak learning rate."""
    betas: tuple[Rate, Rate] = (0.9, 0.98)
    eps: Annotated[float, Field(gt=0.0, lt=1.0)] = 1e-12
    weight_decay: Fraction = 0.01
    no_decay: list[str] = ["bias", "LayerNorm.bias", "LayerNorm.weight"]
    """Parameters whose name contains one of these get no weight decay."""


class ScheduleBudget(_Strict):
    name: Literal["budget-triangle2", "budget-one-cycle", "budget-cosine", "budget-wsd", "constant"] = (
        "budget-triangle2"
    )
    """LR schedule as a function of the fraction of the time budget spent."""
    warmup: Fraction = 0.0
    """Share of the budget spent warming up (cosine and wsd)."""
    cooldown: Fraction = 0.0
    """Share of the budget spent decaying to zero at the end (wsd)."""

    @model_validator(mode="after")
    def _warmup_plus_cooldown(self) -> ScheduleBudget:
        if self.warmup + self.cooldown > 1.0:
            raise ValueError(f"warmup + cooldown = {self.warmup + self.cooldown} must be at most 1")
        return self


class MaskingBudget(_Strict):
    scheme: Literal["bernoulli", "exact"] = "bernoulli"
    """`bernoulli`: each token masked independently (v1); `exact`: exactly round(rate·seq_length) per row (v2)."""
    rate: Rate = 0.15
    """Share of tokens selected for prediction."""
    mask_token: Fraction = 0.8
    """Of the selected tokens, the share replaced by the mask token."""
    random_token: Fraction = 0.1
    """Of the selected tokens, the share replaced by a random token (the rest stay unchanged)."""

    @model_validator(mode="after")
    def _shares_fit(self) -> MaskingBudget:
        if self.mask_token + self.random_token > 1.0:
            raise ValueError(f"mask_token + random_token = {self.mask_token + self.random_token} must be at most 1")
        return self


class TrainBudget(_Strict):
    hours: PositiveFloat = 24.0
    """Wall-clock training time; the LR schedule and the batch ramp are keyed to the share of it spent."""
    optimizer: OptimizerBudget = OptimizerBudget()
    schedule: ScheduleBudget = ScheduleBudget()
    masking: MaskingBudget = MaskingBudget()
    batch_size: PositiveInt = 4096
    """Final batch size in sequences (reached through gradient accumulation)."""
    micro_batch_size: PositiveInt = 128
    """Sequences per forward/backward."""
    batch_ramp: Annotated[float, Field(ge=0.0, le=1e12)] = 300_000
    """Batch-size ramp: ≥ 1 = micro-steps to reach batch_size (v1); in (0, 1) = share of the budget (v2);
    0 = full batch from the start."""
    grad_clip: Annotated[float, Field(ge=0.0, le=1e6)] = 0.5
    """Clip the global gradient L2 norm to this (0 = off)."""
    schedule_clock: Literal["time", "steps"] = "time"
    """What the LR schedule and a fractional batch ramp follow: `time`, the share of `hours` spent (the recipe);
    `steps`, the share of `max_steps` done (deterministic, so a resume is bitwise exact; needs `max_steps`)."""
    max_steps: PositiveInt | None = None
    """Stop after this many micro-steps (a cap: with `schedule_clock: time` it never shapes the schedule)."""
    max_tokens: PositiveInt | None = None
    """Stop after this many training tokens (a cap)."""
    precision: Literal["bf16", "fp16", "fp32"] = "bf16"
    """Autocast dtype on CUDA (fp16 uses a GradScaler); the CPU always trains in fp32."""
    compile: bool = False
    """Wrap the model in torch.compile."""
    checkpoint_every_minutes: Annotated[float, Field(gt=0.0, le=1e6)] = 60.0
    keep_checkpoints: Annotated[int, Field(ge=1, le=1000)] = 2
    log_every_steps: PositiveInt = 50
    """Micro-steps between metric lines."""
    eval_every_minutes: Annotated[float, Field(ge=0.0, le=1e6)] = 30.0
    """Training minutes between held-out evaluations (plus one at the end); 0 = only at the end. The clock
    pauses while evaluating, so evaluation is not charged to `hours`. Runs only when the data has a held-out
    split; the protocol (15 % of non-special tokens, 80/10/10, fixed positions) ignores `masking`."""

    @model_validator(mode="after")
    def _batch_is_multiple(self) -> TrainBudget:
        if self.batch_size % self.micro_batch_size:
            raise ValueError(
                f"batch_size {self.batch_size} must be a multiple of micro_batch_size {self.micro_batch_size}"
            )
        if self.schedule_clock == "steps" and self.max_steps is None:
            raise ValueError("schedule_clock 'steps' needs max_steps (the schedule runs over that many micro-steps)")
        return self


# ----------------------------------------------------------------------------------------------------------
# glue


class GlueBudget(_Strict):
    protocol: Literal["sane", "free"] = "sane"
    """`sane`: the GLUE-sane rules (one hyperparameter set, at most 5 epochs); `free`: no limits."""
    tasks: list[Literal[GLUE_TASKS]] = ["mnli", "qqp", "qnli", "sst2", "cola", "stsb", "mrpc", "rte"]  # type: ignore[valid-type]
    """Tasks to run (WNLI is available but excluded by default, as in the recipe)."""
    trials: Annotated[int, Field(ge=1, le=1000)] = 5
    """Fine-tuning trials per task; the reported number is the median."""
    lr: Annotated[float, Field(gt=0.0, lt=1.0)] = 4e-5
    betas: tuple[Rate, Rate] = (0.9, 0.98)
    eps: Annotated[float, Field(gt=0.0, lt=1.0)] = 1e-6
    weight_decay: Fraction = 0.0
    batch_size: PositiveInt = 16
    epochs: Annotated[int, Field(ge=1, le=1000)] = 5
    warmup: Fraction = 0.1
    """Share of a task's steps spent warming up linearly from 0 (then the schedule to 0 at the end)."""
    warmup_mode: Literal["per-task", "first-task"] = "per-task"
    """`per-task`: each task warms up for `warmup` of its own steps. `first-task`: every task reuses the
    warmup step count of the first task, as the original's single `eval.py` run did (its scheduler turned the
    shared 0.1 into the first task's steps in place); first = earliest run task in the original's order
    cola, mnli, mrpc, qnli, qqp, rte, sst2, stsb, wnli."""
    schedule: Literal["cosine", "linear", "constant"] = "cosine"
    dropout: Fraction = 0.1
    max_length: Annotated[int, Field(ge=8, le=65536)] = 128
    precision: Literal["bf16", "fp16", "fp32"] = "bf16"
    """Fine-tuning arithmetic, on any device: `bf16` autocast; `fp16` autocast with a GradScaler (the
    original's choice; for GPUs without bf16; works on a CPU, slowly); `fp32` no autocast."""

    @model_validator(mode="after")
    def _sane_rules(self) -> GlueBudget:
        if self.protocol == "sane" and self.epochs > 5:
            raise ValueError(f"epochs {self.epochs} exceeds 5, the GLUE-sane limit (use protocol 'free' to lift it)")
        if not self.tasks:
            raise ValueError("tasks must name at least one task")
        return self


MODELS: dict[str, type[_Strict]] = {"data": DataBudget, "arch": ArchBudget, "train": TrainBudget, "glue": GlueBudget}


# ----------------------------------------------------------------------------------------------------------
# loading


def budgets_dir() -> Path:
    """Shipped budgets: inside the installed package, or `budgets/` of a source checkout."""
    installed = Path(__file__).parent / "_budgets"
    return installed if installed.is_dir() else Path(__file__).resolve().parent.parent / "budgets"


def preset_names() -> list[str]:
    """Preset names that have a file for every kind (`24`, `v2`, `demo`, ...)."""
    names: dict[str, set[str]] = {}
    for path in budgets_dir().glob("*_budget_*.json"):
        kind, _, stem = path.stem.partition("_budget_")
        names.setdefault(stem, set()).add(kind)
    return sorted((_display_name(s) for s, kinds in names.items() if kinds >= set(KINDS)), key=_sort_key)


def _display_name(stem: str) -> str:
    return stem.removeprefix("hours_") if stem.startswith("hours_") else stem


def _sort_key(name: str) -> tuple[int, str]:
    return (0, f"{float(name):012.3f}") if _is_number(name) else (1, name)


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def resolve_path(kind: str, name_or_path: str | Path) -> Path:
    """A preset name (`24`, `v2`, `demo`) or a path to a JSON file → the file to read."""
    text = str(name_or_path)
    if text.endswith(".json") or "/" in text or Path(text).exists():
        return Path(text)
    stem = f"hours_{text}" if _is_number(text) else text
    path = budgets_dir() / f"{kind}_budget_{stem}.json"
    if not path.exists():
        raise UsageError(
            f"--budget {text}: no {kind} budget named {text!r} (expected {path});"
            f" presets: {', '.join(preset_names()) or 'none'}, or pass a path to a JSON file"
        )
    return path


def label(name_or_path: str | Path) -> str:
    """The one short name a budget goes by in default folder names: `24` for the preset `24` and for the file
    `budgets/train_budget_hours_24.json` alike (so every kind of the same preset finds the others' folders); a
    custom file's name without `.json` otherwise."""
    text = str(name_or_path)
    if not (text.endswith(".json") or "/" in text):
        return text
    stem = Path(text).stem
    kind, sep, rest = stem.partition("_budget_")
    return _display_name(rest) if sep and kind in KINDS else stem


def file_label(kind: str, name_or_path: str | Path) -> str:
    """The name a budget goes by in published file names: `hours_24` for the preset 24
    (`train_budget_hours_24.json`), `X` for a file `train_budget_X.json`, else the file's stem."""
    stem = resolve_path(kind, name_or_path).stem
    return stem.partition("_budget_")[2] or stem


def load(kind: str, name_or_path: str | Path) -> Any:
    """Read and validate one budget; every problem becomes one line of a `UsageError` (exit 2)."""
    path = resolve_path(kind, name_or_path)
    return parse(kind, path, _read_json(path))


def _read_json(path: Path) -> Any:
    if not path.exists():
        raise UsageError(f"{path}: budget file not found; pass a preset name ({', '.join(preset_names())}) or a path")
    if path.is_dir():
        raise UsageError(f"{path}: is a directory; pass a budget JSON file inside it")
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise UsageError(f"{path}: cannot read ({exc.strerror})") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise UsageError(f"{path}: not UTF-8 text (byte {exc.start}); save the budget as UTF-8 JSON") from None
    if not text.strip():
        raise UsageError(f"{path}: file is empty; a budget is a JSON object, e.g. {{}} for all defaults")
    try:
        return json.loads(text, parse_constant=_reject_constant)
    except json.JSONDecodeError as exc:
        raise UsageError(f"{path}:{exc.lineno}:{exc.colno}: invalid JSON ({exc.msg})") from None
    except ValueError as exc:
        raise UsageError(f"{path}: invalid JSON ({exc})") from None


def _reject_constant(name: str) -> float:
    raise ValueError(f"{name} is not a valid number in a budget")


def parse(kind: str, path: Path | str, data: Any) -> Any:
    model = MODELS[kind]
    if not isinstance(data, dict):
        raise UsageError(f"{path}: a {kind} budget must be a JSON object, not {type(data).__name__}")
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise UsageError(*(f"{path}: {format_error(err)}" for err in exc.errors())) from None


@dataclass(frozen=True)
class Resolved:
    """A validated budget and where each of its fields came from: the preset or file, a flag, or the default."""

    budget: Any
    sources: dict[str, str]


def resolve(kind: str, name_or_path: str | Path, flags: dict[str, tuple[str, Any]] | None = None) -> Resolved:
    """Load a budget with command-line overrides, validated as one document, so a flag gets exactly the checks a
    value in the file gets. `flags` maps a field path (`hours`, `optimizer.lr`) to (the flag as typed, its value);
    a None value means the flag was not given."""
    path = resolve_path(kind, name_or_path)
    raw = _read_json(path)
    if not isinstance(raw, dict):
        parse(kind, path, raw)  # raises the one-line error for a non-object
    given = {field: fv for field, fv in (flags or {}).items() if fv[1] is not None}
    merged = copy.deepcopy(raw)
    for field, (_, value) in given.items():
        _set_path(merged, field, value)
    try:
        budget = MODELS[kind].model_validate(merged)
    except ValidationError as exc:
        raise UsageError(*(_override_error(path, err, given) for err in exc.errors())) from None
    origin = f"file {path}" if Path(str(name_or_path)).suffix == ".json" or "/" in str(name_or_path) else \
        f"preset {name_or_path} ({path.name})"
    sources = {field: (given[field][0] if field in given else origin if _has_path(raw, field) else "default")
               for field, _, _ in flatten(budget)}
    return Resolved(budget, sources)


def _set_path(data: dict[str, Any], field: str, value: Any) -> None:
    *parents, leaf = field.split(".")
    for part in parents:
        data = data.setdefault(part, {})
    data[leaf] = value


def _has_path(data: Any, field: str) -> bool:
    for part in field.split("."):
        if not isinstance(data, dict) or part not in data:
            return False
        data = data[part]
    return True


def _override_error(path: Path, err: Any, given: dict[str, tuple[str, Any]]) -> str:
    loc = ".".join(str(part) for part in err["loc"] if not str(part).startswith("function-after"))
    if loc in given:
        flag, value = given[loc]
        return f"{flag} {value}: {format_error(err).partition(': ')[2]}"
    with_flags = " with " + " ".join(f"{flag} {value}" for flag, value in given.values()) if given else ""
    return f"{path}{with_flags}: {format_error(err)}"


def format_error(err: Any) -> str:
    """One pydantic error → `field.path: message (allowed: ...)`."""
    loc = ".".join(str(part) for part in err["loc"] if not str(part).startswith("function-after")) or "(top level)"
    msg = err["msg"].removeprefix("Value error, ")
    ctx = err.get("ctx") or {}
    kind = err["type"]
    if kind == "extra_forbidden":
        msg = "unknown key (check the spelling; `cram budgets schema` lists the fields)"
    elif kind == "literal_error" and "expected" in ctx:
        msg = f"got {err.get('input')!r}; allowed: {ctx['expected']}"
    elif kind in ("greater_than", "greater_than_equal", "less_than", "less_than_equal") or kind.endswith("_type") or kind.endswith("_parsing"):
        msg = f"{msg}, got {_short(err.get('input'))}"
    return f"{loc}: {msg}"


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def budget_hash(budget: BaseModel) -> str:
    """Stable short hash of a budget's content (sorted JSON), used to key caches and runs."""
    blob = json.dumps(budget.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def flatten(budget: BaseModel) -> list[tuple[str, Any, str]]:
    """(field.path, value, description) rows, for tables and the reference docs."""
    rows: list[tuple[str, Any, str]] = []
    _flatten(budget, "", rows)
    return rows


def _flatten(obj: BaseModel, prefix: str, rows: list[tuple[str, Any, str]]) -> None:
    for name, field in type(obj).model_fields.items():
        value = getattr(obj, name)
        if isinstance(value, BaseModel):
            _flatten(value, f"{prefix}{name}.", rows)
        else:
            rows.append((f"{prefix}{name}", value, (field.description or "").replace("\n", " ")))


def json_schema(kind: str) -> dict[str, Any]:
    schema = MODELS[kind].model_json_schema()
    schema["title"] = f"cram {kind} budget"
    return schema
