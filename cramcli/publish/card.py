"""The model card (README.md) of a cram checkpoint, rendered from what cram recorded; no file access here.

Its shape follows the crammed-BERT cards on the Hugging Face hub: YAML front matter for the hub's filters, what
the model is and how it was trained, the budget files beside the weights, the GLUE table (`| Task | MNLI-(m/mm)
| ... | Average |`), how to load it with transformers, and the paper's citation. Every number comes from
run-config.json / report.json / metrics of the run, config.json of the checkpoint and GLUE's results.json;
what was not recorded is left out rather than guessed.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from typing import Any

TABLE_COLUMNS = ("MNLI-(m/mm)", "QQP", "QNLI", "SST-2", "CoLA", "STS-B", "MRPC", "RTE")
CARD_NUMBERS = ("MNLI-m", "MNLI-mm", "QQP", "QNLI", "SST-2", "CoLA", "STS-B", "MRPC", "RTE")
"""The nine numbers the average is taken over (MNLI counts twice), as on the crammed-BERT cards."""
DASH = "—"
TAGS = ("cramming", "bert", "NLU")
CITATION = """@article{geiping2022cramming,
  title         = {Cramming: Training a Language Model on a Single GPU in One Day},
  author        = {Geiping, Jonas and Goldstein, Tom},
  journal       = {arXiv preprint arXiv:2212.14034},
  year          = {2022},
  eprint        = {2212.14034},
  archivePrefix = {arXiv},
  url           = {https://arxiv.org/abs/2212.14034}
}"""
_MARKER = re.compile(r"\n<!-- cram-card (\{.*\}) -->\n?\Z")


@dataclass
class CardFacts:
    """Everything the card shows. `run_config`/`report` are None for a checkpoint without its run."""

    name: str
    license: str
    load_from: str
    """What the How-to-use snippet loads: the hub repo id, or the folder's path."""
    config: dict[str, Any]
    num_parameters: int
    run_config: dict[str, Any] | None = None
    report: dict[str, Any] | None = None
    glue: dict[str, Any] | None = None
    glue_settings: dict[str, Any] | None = None
    """hparams.json beside results.json (the GLUE budget and the example caps), when present."""
    budget_files: dict[str, str] = field(default_factory=dict)
    """kind (data, train, arch) → file name beside the weights."""
    plots: dict[str, str] = field(default_factory=dict)
    """`training` / `glue` → PNG file name beside the weights."""
    note: str | None = None


# ----------------------------------------------------------------------------------------------------------
# the marker: what cram wrote, so a hand-edited card is never overwritten silently


def sha256(data: bytes | str) -> str:
    return hashlib.sha256(data.encode() if isinstance(data, str) else data).hexdigest()


def with_marker(body: str, record: dict[str, Any]) -> str:
    """Append the last line: the hash of the body and of each file written with it, plus the card's inputs."""
    stamp = {"readme_sha256": sha256(body), **record}
    return f"{body}\n<!-- cram-card {json.dumps(stamp, sort_keys=True)} -->\n"


def read_marker(text: str) -> dict[str, Any] | None:
    """The marker's record when the card is exactly what cram wrote; None when edited or not cram's."""
    found = _MARKER.search(text)
    if found is None:
        return None
    try:
        record = json.loads(found.group(1))
    except ValueError:
        return None
    if not isinstance(record, dict) or record.get("readme_sha256") != sha256(text[: found.start()]):
        return None
    return record


# ----------------------------------------------------------------------------------------------------------
# rendering


def render(facts: CardFacts) -> str:
    parts = [_front_matter(facts), f"# {facts.name}\n", _intro(facts)]
    if facts.note:
        parts.append(facts.note.strip() + "\n")
    parts += [_model_section(facts), _training_section(facts), _evaluation_section(facts), _usage_section(facts),
              f"## Citation\n\n```bibtex\n{CITATION}\n```\n"]
    return "\n".join(p for p in parts if p)


def hub_dataset(source: str | None) -> str | None:
    """`hf:allenai/c4:en` → `allenai/c4` (a hub id for `datasets:`); local files and `embedded` are not."""
    if not source or not source.startswith("hf:"):
        return None
    name = source[3:].split(":", 1)[0]
    return name or None


def _front_matter(facts: CardFacts) -> str:
    meta: list[tuple[str, Any]] = [("license", facts.license), ("language", ["en"])]
    dataset = hub_dataset(_data_source(facts))
    if dataset:
        meta.append(("datasets", [dataset]))
    meta += [("metrics", ["glue"]), ("pipeline_tag", "fill-mask"), ("library_name", "transformers"),
             ("tags", list(TAGS))]
    lines = ["---"]
    for key, value in meta:
        if isinstance(value, list):  # JSON strings are valid YAML scalars, quoted safely
            lines += [f"{key}:"] + [f"- {json.dumps(v)}" for v in value]
        else:
            lines.append(f"{key}: {json.dumps(value)}")
    return "\n".join([*lines, "---", ""])


def _intro(facts: CardFacts) -> str:
    text = ("A crammed BERT: a BERT-style masked language model pretrained from scratch on a fixed compute budget "
            "with cram (the `cramcli` package), following *Cramming: Training a Language Model "
            "on a Single GPU in One Day* (Geiping & Goldstein, [arXiv:2212.14034](https://arxiv.org/abs/2212.14034)).")
    rep = facts.report
    if rep and rep.get("training_hours") is not None:
        text += (f" It trained for {_hours(rep['training_hours'])} (budget: {_hours(rep.get('budget_hours'))}) on "
                 f"{_hardware(rep)}.")
    return text + " Every number on this card was recorded by cram while the model was trained and evaluated.\n"


def _model_section(facts: CardFacts) -> str:
    c = facts.config
    ffn = "gated FFN" if c.get("glu", True) else "FFN"
    tied = "the decoder is tied to the embedding" if c.get("tie_word_embeddings", True) else "untied decoder"
    rows = [
        ("architecture", f"crammed BERT, layout `{c.get('layout', 'v1')}`: {c.get('num_layers')} pre-LN layers, "
                         f"hidden size {c.get('hidden_size')}, {c.get('num_heads')} heads, {ffn} "
                         f"{c.get('intermediate_size')}, no linear biases{_modern_options(c)}"),
        ("parameters", f"{facts.num_parameters:,} ({_short(facts.num_parameters)}; {tied})"),
        ("vocabulary", f"{c.get('vocab_size')} tokens, inputs up to {c.get('max_seq_length')} tokens"),
        ("attention", f"`{c.get('attention', 'pytorch')}`"),
    ]
    return "## Model\n\n" + _kv_table(rows)


def _modern_options(c: dict[str, Any]) -> str:
    """The arch options (docs/recipes.md) that differ from the recipe, as a clause; empty for the recipe."""
    named = [f"positions `{c['position_embedding']}`" if c.get("position_embedding", "scaled-sinusoidal")
             != "scaled-sinusoidal" else "",
             f"QK-norm `{c['qk_norm']}`" if c.get("qk_norm", "none") != "none" else "",
             f"activation `{c['activation']}`" if c.get("activation", "gelu") != "gelu" else "",
             "zero-initialised output projections" if c.get("zero_init_residual") else ""]
    named = [n for n in named if n]
    return f"; {', '.join(named)}" if named else ""


def _training_section(facts: CardFacts) -> str:
    rep, cfg = facts.report, facts.run_config
    if rep is None or cfg is None:
        return "## Training\n\nThe training run of this checkpoint was not found, so its budget is not shown here.\n"
    train = cfg.get("train", {})
    rows: list[tuple[str, str]] = []
    budget = f"{_hours(rep.get('budget_hours'))} of training time"
    if "train" in facts.budget_files:
        budget += f" ([`{facts.budget_files['train']}`]({facts.budget_files['train']}))"
    rows.append(("budget", budget))
    rows.append(("trained", f"{_hours(rep.get('training_hours'))} on {_hardware(rep)}, stopped by "
                            f"{rep.get('stop_reason', 'an unknown reason')}"))
    if rep.get("tokens") is not None:
        rows.append(("tokens seen", f"{rep['tokens']:,} ({_short(rep['tokens'])})"))
    rows.append(("steps", f"{rep.get('optimizer_steps', 0):,} optimizer steps of up to {train.get('batch_size')} "
                          f"sequences ({rep.get('micro_steps', 0):,} micro-batches of {train.get('micro_batch_size')})"))
    if rep.get("final_loss") is not None:
        loss = f"{rep['final_loss']:.3f} at the last logged step"
        if rep.get("loss_ema") is not None:
            loss += f" (smoothed {rep['loss_ema']:.3f})"
        if rep.get("first_loss") is not None:
            loss += f"; {rep['first_loss']:.3f} at the first"
        rows.append(("final MLM loss", loss))
    if rep.get("heldout_loss") is not None:
        rows.append(("held-out MLM loss", f"{rep['heldout_loss']:.3f} (accuracy {rep['heldout_accuracy']:.1%}) on "
                                          f"{rep.get('heldout_rows', 0):,} held-out rows, a fixed 15 % of their "
                                          f"tokens masked; {rep.get('evaluations', 0)} evaluations took "
                                          f"{rep.get('eval_seconds', 0):.0f} s, not charged to the budget"))
    if rep.get("tokens_per_s"):
        rows.append(("throughput", f"{rep['tokens_per_s']:,.0f} tokens/s on average"))
    opt, sched = train.get("optimizer", {}), train.get("schedule", {})
    if opt:
        rows.append(("optimizer", f"AdamW, peak lr {opt.get('lr')}, betas {tuple(opt.get('betas', ()))}, weight decay "
                                  f"{opt.get('weight_decay')}, schedule `{sched.get('name')}`, precision "
                                  f"{train.get('precision')}"))
    source = _data_source(facts)
    if source:
        data = f"`{source}`"
        if "data" in facts.budget_files:
            data += f", prepared with [`{facts.budget_files['data']}`]({facts.budget_files['data']})"
        rows.append(("data", data))
    text = "## Training\n\n" + _kv_table(rows)
    if facts.budget_files:
        names = [facts.budget_files[k] for k in ("data", "arch", "train") if k in facts.budget_files]
        text += ("\nThe budgets this model was made with are beside the weights: "
                 + ", ".join(f"[`{n}`]({n})" for n in names)
                 + f". Check them with `cram budgets validate {' '.join(names)}`.\n")
    if "training" in facts.plots:
        text += (f"\n![Training curves: MLM loss (raw and smoothed), learning rate and batch size, tokens/s against "
                 f"training time]({facts.plots['training']})\n")
    return text


def glue_row(columns: dict[str, float]) -> list[str]:
    """The card's GLUE cells from the medians (×100): one decimal, `—` for what was not run."""

    def cell(col: str) -> str:
        return f"{columns[col]:.1f}" if col in columns else DASH

    mnli = DASH if "MNLI-m" not in columns and "MNLI-mm" not in columns else f"{cell('MNLI-m')}/{cell('MNLI-mm')}"
    present = [columns[c] for c in CARD_NUMBERS if c in columns]
    if not present:
        average = DASH
    elif len(present) == len(CARD_NUMBERS):
        average = f"{sum(present) / len(present):.1f}"
    else:
        average = f"{sum(present) / len(present):.1f} (partial: {len(present)} of {len(CARD_NUMBERS)})"
    return [mnli, *(cell(c) for c in TABLE_COLUMNS[1:]), average]


def glue_columns(glue: dict[str, Any]) -> dict[str, float]:
    """Raw medians per card column from results.json's tasks (the summary is rounded for people)."""
    return {col: float(v) for task in glue.get("tasks", {}).values() for col, v in task.get("median", {}).items()}


def _evaluation_section(facts: CardFacts) -> str:
    glue = facts.glue
    if glue is None:
        return ("## Evaluation\n\nNot evaluated on GLUE yet: run `cram glue --model CHECKPOINT`, then `cram card` "
                "again.\n")
    columns = glue_columns(glue)
    trials = glue.get("trials")
    protocol = glue.get("protocol")
    how = ("the GLUE-sane protocol (one set of hyperparameters for every task, at most 5 epochs, no per-task tuning)"
           if protocol == "sane" else f"the `{protocol}` protocol (hyperparameters not restricted)")
    text = (f"## Evaluation\n\nGLUE dev sets after fine-tuning with {how}: each number is the median over {trials} "
            f"trial(s) with different seeds, ×100. Metrics: accuracy, F1 for QQP and MRPC, Matthews correlation for "
            f"CoLA, Pearson correlation for STS-B; the average is the mean of the nine numbers (MNLI-m and MNLI-mm "
            f"both count).\n\n")
    text += "| Task | " + " | ".join(TABLE_COLUMNS) + " | Average |\n"
    text += "|" + "---|" * (len(TABLE_COLUMNS) + 2) + "\n"
    text += f"| {facts.name} | " + " | ".join(glue_row(columns)) + " |\n"
    missing = [c for c in TABLE_COLUMNS if glue_row(columns)[TABLE_COLUMNS.index(c)] == DASH]
    if missing:
        text += (f"\n{DASH}: not run ({', '.join(missing)}). The average covers only the tasks that were run, so it "
                 "is not comparable with a full GLUE average.\n")
    if "WNLI" in columns:
        text += f"\nWNLI (not in the table or the average, as in the paper): {columns['WNLI']:.1f}.\n"
    spread = [f"{c} {t['min'][c]:.1f}–{t['max'][c]:.1f}" for c in CARD_NUMBERS
              for t in glue.get("tasks", {}).values() if c in t.get("min", {})]
    if spread and (trials or 0) > 1:
        text += f"\nLowest–highest trial: {', '.join(spread)}.\n"
    text += _glue_setup(facts)
    if "glue" in facts.plots:
        text += f"\n![GLUE dev medians with the min–max spread over trials]({facts.plots['glue']})\n"
    return text


def _glue_setup(facts: CardFacts) -> str:
    glue, settings = facts.glue or {}, facts.glue_settings or {}
    lines = []
    budget = settings.get("budget") or {}
    if budget:
        lines.append(f"Fine-tuning: lr {budget.get('lr')}, batch size {budget.get('batch_size')}, "
                     f"{budget.get('epochs')} epoch(s), `{budget.get('schedule')}` schedule with warmup "
                     f"{budget.get('warmup')}, dropout {budget.get('dropout')}, inputs up to {budget.get('max_length')} "
                     "tokens.")
    caps = [f"at most {settings[k]:,} {what} examples per task" for k, what in
            (("max_train_examples", "training"), ("max_eval_examples", "dev")) if settings.get(k)]
    if caps:
        lines.append(f"Run on {' and '.join(caps)}: a quick look, not a full GLUE evaluation.")
    sources = sorted({t.get("source") for t in glue.get("tasks", {}).values() if t.get("source")})
    if sources:
        lines.append("Task data: " + ", ".join(f"`{s}`" for s in sources) + ".")
    return ("\n" + " ".join(lines) + "\n") if lines else ""


def _usage_section(facts: CardFacts) -> str:
    where = facts.load_from
    text = ("## How to use\n\ncram registers crammed BERT with the transformers Auto classes on import "
            "(`pip install cramcli`):\n\n```python\n"
            "import cramcli  # registers model_type \"cram-bert\" with transformers\n"
            "from transformers import AutoModelForMaskedLM, AutoTokenizer\n\n"
            f"tokenizer = AutoTokenizer.from_pretrained({where!r})\n"
            f"model = AutoModelForMaskedLM.from_pretrained({where!r})\n\n"
            "text = f\"the capital of france is {tokenizer.mask_token} .\"\n"
            "inputs = tokenizer(text, return_tensors=\"pt\", return_token_type_ids=False)\n"
            "logits = model(**inputs).logits  # [batch, tokens, vocabulary]\n"
            "masked = inputs[\"input_ids\"][0].tolist().index(tokenizer.mask_token_id)\n"
            "print(tokenizer.decode(logits[0, masked].argmax()))\n```\n")
    if facts.config.get("attention") == "flash":
        text += ("\nThis checkpoint is set up for the flash-attn kernels (CUDA, bf16/fp16). To run it anywhere else, "
                 f"convert it first (the weights stay bit-identical):\n\n```bash\ncram convert {where} --attention "
                 f"pytorch --out {where.rstrip('/')}-pytorch\n```\n")
    text += ("\nFine-tune it on GLUE with `cram glue --model CHECKPOINT`, or load a classifier with "
             "`AutoModelForSequenceClassification.from_pretrained(..., num_labels=N)`; "
             "`AutoModelForTokenClassification`, `AutoModelForQuestionAnswering` and `AutoModelForMultipleChoice` "
             "load it too, for the transformers `Trainer` (which needs `accelerate`).\n")
    return text


# ----------------------------------------------------------------------------------------------------------
# small formatting helpers


def _data_source(facts: CardFacts) -> str | None:
    return (facts.run_config or {}).get("data_source")


def _kv_table(rows: list[tuple[str, str]]) -> str:
    return "| | |\n|---|---|\n" + "".join(f"| {k} | {v} |\n" for k, v in rows)


def _hours(value: float | None) -> str:
    if value is None:
        return "an unrecorded time"
    if value >= 1:
        return f"{value:.2f} hours"
    if value >= 1 / 60:
        return f"{value * 60:.1f} minutes"
    return f"{value * 3600:.1f} seconds"


def _hardware(rep: dict[str, Any]) -> str:
    name = rep.get("device_name") or rep.get("device") or "an unrecorded device"
    world = rep.get("world_size") or 1
    return f"{world}× {name}" if world > 1 else str(name)


def _short(n: int) -> str:
    for scale, unit in ((1e12, "T"), (1e9, "B"), (1e6, "M"), (1e3, "k")):
        if n >= scale:
            return f"{n / scale:.2f} {unit}"
    return str(n)
