"""The budget models: four kinds, one pydantic model each — `DataBudget` (prepare-data), `ArchBudget` (the model),
`TrainBudget` (pretrain) and `GlueBudget` (finetune-glue). Each field's docstring is its documentation
(docs/budgets.md is generated from it). Reading budget files, flag overrides and the schema: `files.py`."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

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
    position_embedding: Literal["scaled-sinusoidal", "rotary", "rotary+sinusoidal"] = "scaled-sinusoidal"
    """Positions: the recipe's scaled sinusoid added to the embedding; `rotary` (RoPE, Su et al. 2021, arXiv
    2104.09864) rotates queries and keys in every attention layer instead; `rotary+sinusoidal` does both."""
    rotary_base: Annotated[float, Field(gt=1.0, le=1e9)] = 10000.0
    """RoPE base θ: frequencies θ^(−2i/head_size)."""
    qk_norm: Literal["none", "rms", "layer"] = "none"
    """Normalise queries and keys per head before the dot product (QK-norm; OLMo 2, modded-nanoGPT): `rms`
    (RMSNorm) or `layer` (LayerNorm), each with a learned scale per head dimension; `none` (recipe)."""
    activation: Literal["gelu", "relu2", "silu"] = "gelu"
    """FFN activation: exact GELU (recipe), ReLU² (So et al., Primer, arXiv 2109.08668) or SiLU (SwiGLU when
    gated)."""
    glu: bool = True
    """Gated FFN (recipe): the input projection's halves are x and gate, out = x · act(gate). Off: a plain FFN
    act(dense_in(x)) whose output projection reads all `intermediate_size` features (more weights)."""
    zero_init_residual: bool = False
    """Initialise the attention output and FFN output projections to zero, so every layer starts as the
    identity (modded-nanoGPT); off: N(0, init_std) as the recipe."""
    tie_decoder: bool = True
    """Tie the MLM decoder to the word embedding (recipe); off: the decoder is its own vocab × hidden matrix."""
    classifier: ClassifierBudget = ClassifierBudget()

    @model_validator(mode="after")
    def _heads_divide_hidden(self) -> ArchBudget:
        if self.hidden_size % self.num_heads:
            raise ValueError(
                f"hidden_size {self.hidden_size} must be divisible by num_heads {self.num_heads}"
                f" (allowed num_heads: {_divisors(self.hidden_size)})"
            )
        if self.glu and self.intermediate_size % 2:
            raise ValueError(f"intermediate_size {self.intermediate_size} must be even (the gated FFN splits it)")
        return self

    @model_validator(mode="after")
    def _rotary_head_size_is_even(self) -> ArchBudget:
        if self.position_embedding != "scaled-sinusoidal" and self.hidden_size // self.num_heads % 2:
            raise ValueError(f"rotary positions need an even head size; hidden_size {self.hidden_size} / num_heads "
                             f"{self.num_heads} = {self.hidden_size // self.num_heads}")
        return self


def _divisors(n: int) -> str:
    divs = [d for d in range(1, min(n, 64) + 1) if n % d == 0]
    return ", ".join(map(str, divs))


# ----------------------------------------------------------------------------------------------------------
# train


class MuonBudget(_Strict):
    lr: Annotated[float, Field(gt=0.0, lt=10.0)] = 1e-3
    """Peak learning rate of the hidden matrices (the schedule scales it like AdamW's). With `match_rms_adamw`
    AdamW's LR carries over; with `original` it wants far larger values (speedrun-style 0.02–0.05)."""
    weight_decay: Fraction = 0.01
    """Decoupled weight decay of the hidden matrices."""
    momentum: Rate = 0.95
    nesterov: bool = True
    ns_steps: Annotated[int, Field(ge=1, le=100)] = 5
    """Newton–Schulz iterations that orthogonalise each update."""
    adjust_lr_fn: Literal["match_rms_adamw", "original"] = "match_rms_adamw"
    """`torch.optim.Muon`'s step scaling: `match_rms_adamw` scales the update to AdamW's typical RMS
    (0.2·√max(rows, cols); Moonshot AI, arXiv 2502.16982); `original` by √max(1, rows/cols) (K. Jordan)."""


class OptimizerBudget(_Strict):
    name: Literal["adamw", "muon"] = "adamw"
    """`adamw` for every parameter (recipe); `muon`: `torch.optim.Muon` for the hidden 2-D matrices of the
    encoder layers (attention qkv and output, FFN in and out) with the `muon` settings, AdamW (the fields
    below) for embeddings, norms, biases and the prediction head and decoder."""
    lr: Annotated[float, Field(gt=0.0, lt=1.0)] = 1e-3
    """Peak learning rate."""
    betas: tuple[Rate, Rate] = (0.9, 0.98)
    eps: Annotated[float, Field(gt=0.0, lt=1.0)] = 1e-12
    weight_decay: Fraction = 0.01
    no_decay: list[str] = ["bias", "LayerNorm.bias", "LayerNorm.weight"]
    """Parameters whose name contains one of these get no weight decay."""
    muon: MuonBudget = MuonBudget()
    """Muon's settings; read only when `name` is `muon`."""


class ScheduleBudget(_Strict):
    name: Literal["budget-triangle2", "budget-one-cycle", "budget-cosine", "budget-wsd", "constant"] = (
        "budget-triangle2"
    )
    """LR schedule as a function of the fraction of the time budget spent."""
    warmup: Fraction = 0.0
    """Share of the budget spent warming up (cosine and wsd)."""
    cooldown: Fraction = 0.0
    """Share of the budget spent decaying to zero at the end (wsd)."""
    decay: Literal["linear", "1-sqrt", "cosine"] = "linear"
    """Shape of the wsd cooldown over its share t ∈ [0, 1]: `linear` 1 − t, `1-sqrt` 1 − √t (Hägele et al.,
    arXiv 2405.18392), `cosine` ½(1 + cos πt)."""

    @model_validator(mode="after")
    def _warmup_plus_cooldown(self) -> ScheduleBudget:
        if self.warmup + self.cooldown > 1.0:
            raise ValueError(f"warmup + cooldown = {self.warmup + self.cooldown} must be at most 1")
        return self


class MaskingBudget(_Strict):
    scheme: Literal["bernoulli", "exact"] = "bernoulli"
    """`bernoulli`: each token masked independently (v1); `exact`: exactly round(rate·seq_length) per row (v2)."""
    rate: Rate = 0.15
    """Share of tokens selected for prediction (at the start of the budget when `final_rate` is set)."""
    final_rate: Rate | None = None
    """Scheduled masking: the rate moves linearly from `rate` to this over the budget (the clock the LR
    schedule follows, set at each optimizer step); unset: `rate` throughout (recipe)."""
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
    """Wall-clock training time; the LR schedule (and a fractional batch ramp) follows the share of it spent; a
    batch ramp of ≥ 1 counts micro-steps, not time."""
    optimizer: OptimizerBudget = OptimizerBudget()
    schedule: ScheduleBudget = ScheduleBudget()
    masking: MaskingBudget = MaskingBudget()
    batch_size: PositiveInt = 4096
    """Final batch size in sequences (reached through gradient accumulation)."""
    micro_batch_size: PositiveInt = 128
    """Sequences per forward/backward."""
    batch_ramp: Annotated[float, Field(ge=0.0, le=1e12)] = 300_000
    """Batch-size ramp: ≥ 1 = micro-steps to reach batch_size (v1); in (0, 1) = share of the budget (v2);
    0 = full batch from the start. Micro-steps here and in `max_steps` are micro-batches of micro_batch_size
    sequences: under torchrun one step of N processes counts N."""
    grad_clip: Annotated[float, Field(ge=0.0, le=1e6)] = 0.5
    """Clip the global gradient L2 norm to this (0 = off)."""
    schedule_clock: Literal["time", "steps"] = "time"
    """What the LR schedule and a fractional batch ramp follow: `time`, the share of `hours` spent (the recipe);
    `steps`, the share of `max_steps` done (deterministic, so a resume is bitwise exact; needs `max_steps`)."""
    max_steps: PositiveInt | None = None
    """Stop after this many micro-steps of micro_batch_size sequences, N per step of N processes (a cap: with
    `schedule_clock: time` it never shapes the schedule)."""
    max_tokens: PositiveInt | None = None
    """Stop after this many training tokens (a cap)."""
    precision: Literal["bf16", "fp16", "fp32"] = "bf16"
    """Autocast dtype on CUDA (fp16 uses a GradScaler; bf16 on a GPU without it falls back to fp16 with the
    GradScaler, saying so); the CPU always trains in fp32."""
    compile: bool = False
    """Wrap the model in torch.compile."""
    sparse_count: Literal["auto", "exact", "fixed"] = "auto"
    """How an arch's `dynamic` sparse prediction is run. `exact`: the masked positions by boolean indexing (the
    original v1; on a GPU the host waits for the count every micro-step). `fixed`: a fixed count sized to the
    masking rate (+4σ for Bernoulli), masked positions first, so nothing waits and shapes never change; the loss
    is the same unless more positions are masked than fit. `auto`: `fixed` on CUDA, `exact` elsewhere. Under
    compile always `fixed`."""
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
    """Fine-tuning arithmetic on CUDA, the same rule as pretraining's: `bf16` autocast (on a GPU without bf16,
    fp16 with a GradScaler, saying so); `fp16` autocast with a GradScaler (the original's choice); `fp32` no
    autocast. A CPU fine-tunes in fp32, as the original (autocast off on a CPU)."""

    @model_validator(mode="after")
    def _sane_rules(self) -> GlueBudget:
        if self.protocol == "sane" and self.epochs > 5:
            raise ValueError(f"epochs {self.epochs} exceeds 5, the GLUE-sane limit (use protocol 'free' to lift it)")
        if not self.tasks:
            raise ValueError("tasks must name at least one task")
        return self


MODELS: dict[str, type[_Strict]] = {"data": DataBudget, "arch": ArchBudget, "train": TrainBudget, "glue": GlueBudget}
