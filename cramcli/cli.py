"""The `cram` command line: parse flags, then call one stage module. No work happens here.

Every stage follows the same conventions: `--out` for what it writes, `--force` to replace a finished result,
`report.json` beside the artefacts, `--json` for the final report on stdout (people's output then goes to
stderr), `--device`/`--gpu`, `--seed`, `--quiet`/`--verbose`; exit 0 on success, 2 on bad input, 1 on failure.
"""

from __future__ import annotations

import importlib
import json
import sys
from enum import Enum
from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from rich.console import Console
from rich.table import Table

from cramcli import budgets
from cramcli.utils.console import Output
from cramcli.utils.errors import CramError, UsageError

app = typer.Typer(
    name="cram",
    help="Pretrain a crammed BERT from scratch on a fixed compute budget and measure it on GLUE.",
    no_args_is_help=True,
    rich_markup_mode="rich",
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)
budgets_app = typer.Typer(help="List, show, validate budgets and write their JSON Schema.", no_args_is_help=True)
app.add_typer(budgets_app, name="budgets")

_err = Console(stderr=True)


class Attention(str, Enum):
    pytorch = "pytorch"
    flash = "flash"


# Options shared by the stages (typer reads the metadata from these aliases).
JsonOpt = Annotated[bool, typer.Option("--json", help="Print the final report as JSON on stdout (people's output goes to stderr).")]
QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", help="Only errors and the final report.")]
VerboseOpt = Annotated[bool, typer.Option("--verbose", "-v", help="More detail, e.g. where each setting came from.")]
ForceOpt = Annotated[bool, typer.Option("--force", help="Replace an existing finished result at --out.")]
SeedOpt = Annotated[int, typer.Option("--seed", help="Random seed.")]
DeviceOpt = Annotated[Optional[str], typer.Option("--device", help="cpu, cuda or cuda:N (default: cuda if present, else cpu).")]
GpuOpt = Annotated[Optional[int], typer.Option("--gpu", help="Shorthand for --device cuda:N.")]


def _run_stage(module: str, json_mode: bool, quiet: bool, verbose: bool, **kwargs: Any) -> None:
    """Import the stage lazily (keeps `--help` fast), run it, and turn user errors into one-line messages."""
    output = Output(json_mode=json_mode, quiet=quiet, verbose=verbose)
    try:
        stage = importlib.import_module(f"cramcli.stages.{module}")
        stage.run(output=output, **kwargs)
    except CramError as exc:
        _fail(exc)
    except (ValueError, RuntimeError) as exc:
        # The model layer raises plain ValueError/RuntimeError; those its caller's input caused are one line too.
        model_errors = sys.modules.get("cramcli.model.errors")
        if model_errors is None or not isinstance(exc, model_errors.INPUT_ERRORS):
            raise
        _fail(UsageError(str(exc)))
    except KeyboardInterrupt:
        _err.print("[red]interrupted[/]")
        raise typer.Exit(130) from None


def _fail(exc: CramError) -> None:
    for line in exc.lines:
        _err.print(f"[bold red]error:[/] {line}", highlight=False, soft_wrap=True)
    raise typer.Exit(exc.exit_code)


# ----------------------------------------------------------------------------------------------------------
# prepare-data / train-tokenizer


@app.command("prepare-data")
def prepare_data(
    budget: Annotated[str, typer.Option("--budget", "-b", help="Data budget: preset name (24, v2, demo) or JSON file.")] = "24",
    source: Annotated[Optional[str], typer.Option("--source", "-s", help="Override the budget's source: hf:NAME[:CONFIG], a local file/folder (txt, jsonl[.gz], json, parquet), or 'embedded'.")] = None,
    out: Annotated[Optional[Path], typer.Option("--out", "-o", help="Output folder (default: outputs/data/<source>_<hash>).")] = None,
    tokenizer: Annotated[Optional[Path], typer.Option("--tokenizer", help="Use this tokenizer.json instead of training one.")] = None,
    max_documents: Annotated[Optional[int], typer.Option("--max-documents", help="Override the budget's cap on raw documents.")] = None,
    workers: Annotated[int, typer.Option("--workers", help="Worker processes for normalising/filtering (0 = all cores).")] = 0,
    seed: Annotated[Optional[int], typer.Option("--seed", help="Override the budget's seed (shuffling, random ordering).")] = None,
    force: ForceOpt = False,
    json_mode: JsonOpt = False,
    quiet: QuietOpt = False,
    verbose: VerboseOpt = False,
) -> None:
    """Raw text → normalised, filtered, deduplicated, tokenized, packed rows that [bold]cram pretrain[/] reads.

    The same command twice reuses the cached result; any change to the budget, source or tokenizer rebuilds.
    """
    _run_stage("prepare_data", json_mode, quiet, verbose, budget=budget, source=source, out=out,
               tokenizer=tokenizer, max_documents=max_documents, workers=workers, seed=seed, force=force)


@app.command("train-tokenizer")
def train_tokenizer(
    source: Annotated[Optional[str], typer.Option("--source", "-s", help="Raw text: hf:NAME[:CONFIG], a local file/folder, or 'embedded' (default: the budget's).")] = None,
    budget: Annotated[str, typer.Option("--budget", "-b", help="Data budget for normalisation and tokenizer settings.")] = "24",
    vocab_size: Annotated[Optional[int], typer.Option("--vocab-size", help="Vocabulary size (default: the budget's, 32768 for 24).")] = None,
    max_documents: Annotated[Optional[int], typer.Option("--max-documents", help="Train on at most this many documents.")] = None,
    out: Annotated[Path, typer.Option("--out", "-o", help="Output folder for tokenizer.json and its report.")] = Path("outputs/tokenizer"),
    force: ForceOpt = False,
    json_mode: JsonOpt = False,
    quiet: QuietOpt = False,
    verbose: VerboseOpt = False,
) -> None:
    """Train a WordPiece tokenizer with fixed special-token ids on normalised raw text."""
    _run_stage("train_tokenizer", json_mode, quiet, verbose, source=source, budget=budget, vocab_size=vocab_size,
               max_documents=max_documents, out=out, force=force)


# ----------------------------------------------------------------------------------------------------------
# pretrain


@app.command("pretrain")
def pretrain(
    budget: Annotated[str, typer.Option("--budget", "-b", help="Train budget: preset name (24, v2, demo) or JSON file.")] = "24",
    arch: Annotated[Optional[str], typer.Option("--arch", help="Arch budget: preset name or JSON file (default: same preset as --budget).")] = None,
    hours: Annotated[Optional[float], typer.Option("--hours", help="Wall-clock training hours (overrides the budget; fractions allowed).")] = None,
    data: Annotated[Optional[Path], typer.Option("--data", help="Prepared-data folder (default: what prepare-data wrote for the same budget).")] = None,
    out: Annotated[Optional[Path], typer.Option("--out", "-o", help="Run folder (default: outputs/runs/<budget>).")] = None,
    resume: Annotated[bool, typer.Option("--resume", help="Continue the run in --out from its last checkpoint.")] = False,
    max_steps: Annotated[Optional[int], typer.Option("--max-steps", help="Stop after this many micro-steps.")] = None,
    micro_batch_size: Annotated[Optional[int], typer.Option("--micro-batch-size", help="Override the budget's micro-batch (e.g. what cram bench found).")] = None,
    compile: Annotated[Optional[bool], typer.Option("--compile/--no-compile", help="torch.compile the model (default: the budget's).")] = None,
    device: DeviceOpt = None,
    gpu: GpuOpt = None,
    seed: SeedOpt = 0,
    force: ForceOpt = False,
    json_mode: JsonOpt = False,
    quiet: QuietOpt = False,
    verbose: VerboseOpt = False,
) -> None:
    """Masked-LM pretraining of crammed BERT, scheduled and stopped by a wall-clock budget.

    Checkpoints every few minutes and on Ctrl-C/SIGTERM; [bold]--resume[/] continues exactly. Under torchrun
    it trains data-parallel (DDP).
    """
    _run_stage("pretrain", json_mode, quiet, verbose, budget=budget, arch=arch, hours=hours, data=data, out=out,
               resume=resume, max_steps=max_steps, micro_batch_size=micro_batch_size, compile=compile,
               device=device, gpu=gpu, seed=seed, force=force)


# ----------------------------------------------------------------------------------------------------------
# finetune-glue (alias glue)


def _finetune_glue(
    model: Annotated[Path, typer.Option("--model", "-m", help="A cram run folder or an HF-style checkpoint folder.")],
    budget: Annotated[str, typer.Option("--budget", "-b", help="GLUE budget: preset name (24 = GLUE-sane, demo) or JSON file.")] = "24",
    tasks: Annotated[Optional[str], typer.Option("--tasks", help="Comma-separated tasks (cola,sst2,mrpc,qqp,stsb,mnli,qnli,rte,wnli; default: the budget's 8).")] = None,
    trials: Annotated[Optional[int], typer.Option("--trials", help="Fine-tuning trials per task; the median is reported.")] = None,
    glue_dir: Annotated[Optional[Path], typer.Option("--glue-dir", help="Folder with the original GLUE task folders (CoLA/, SST-2/, ...), or HF/parquet exports.")] = None,
    max_train_examples: Annotated[Optional[int], typer.Option("--max-train-examples", help="Use at most this many training examples per task (a quick look).")] = None,
    max_eval_examples: Annotated[Optional[int], typer.Option("--max-eval-examples", help="Evaluate on at most this many dev examples per task.")] = None,
    epochs: Annotated[Optional[int], typer.Option("--epochs", help="Override the budget's epochs (≤ 5 under the GLUE-sane protocol).")] = None,
    legacy_attention_mask: Annotated[bool, typer.Option("--legacy-attention-mask", help="Fidelity switch: let padding be attended to, as the original v1 flash model did.")] = False,
    out: Annotated[Optional[Path], typer.Option("--out", "-o", help="Results folder (default: <model>/glue).")] = None,
    device: DeviceOpt = None,
    gpu: GpuOpt = None,
    seed: SeedOpt = 0,
    force: ForceOpt = False,
    json_mode: JsonOpt = False,
    quiet: QuietOpt = False,
    verbose: VerboseOpt = False,
) -> None:
    """Fine-tune on GLUE with the GLUE-sane protocol: one hyperparameter set, ≤ 5 epochs, median over trials.

    Finished (task, trial) results are kept, so an interrupted run resumes where it stopped.
    """
    _run_stage("finetune_glue", json_mode, quiet, verbose, model=model, budget=budget, tasks=tasks, trials=trials,
               glue_dir=glue_dir, max_train_examples=max_train_examples, max_eval_examples=max_eval_examples,
               epochs=epochs, legacy_attention_mask=legacy_attention_mask, out=out, device=device, gpu=gpu,
               seed=seed, force=force)


app.command("finetune-glue")(_finetune_glue)
app.command("glue", help="Alias of [bold]finetune-glue[/].")(_finetune_glue)


# ----------------------------------------------------------------------------------------------------------
# convert-attention (alias convert)


def _convert_attention(
    checkpoint: Annotated[Path, typer.Argument(help="Checkpoint folder: cram's own, or an original cramming v1/v2 checkpoint.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Output checkpoint folder.")],
    attention: Annotated[Attention, typer.Option("--attention", "-a", help="Target attention implementation.")] = Attention.pytorch,
    device: DeviceOpt = None,
    gpu: GpuOpt = None,
    force: ForceOpt = False,
    json_mode: JsonOpt = False,
    quiet: QuietOpt = False,
    verbose: VerboseOpt = False,
) -> None:
    """Rewrite a checkpoint for another attention implementation (flash-attn fused layout ↔ plain PyTorch),
    importing original cramming checkpoints on the way, and check parity on a probe batch."""
    _run_stage("convert_attention", json_mode, quiet, verbose, checkpoint=checkpoint, out=out,
               attention=attention.value, device=device, gpu=gpu, force=force)


app.command("convert-attention")(_convert_attention)
app.command("convert", help="Alias of [bold]convert-attention[/].")(_convert_attention)


# ----------------------------------------------------------------------------------------------------------
# demo and bench


@app.command("demo")
def demo(
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder for every artefact of the demo.")] = Path("outputs/demo"),
    fresh: Annotated[bool, typer.Option("--fresh", help="Start over instead of reusing finished stages.")] = False,
    minutes: Annotated[Optional[float], typer.Option("--minutes", help="Pretraining minutes (default: the demo budget's).")] = None,
    documents: Annotated[Optional[int], typer.Option("--documents", help="Embedded documents to generate (default: the demo data budget's).")] = None,
    trials: Annotated[Optional[int], typer.Option("--trials", help="Fine-tuning trials per task (default: the demo GLUE budget's).")] = None,
    task_examples: Annotated[int, typer.Option("--task-examples", help="Training examples per generated task (dev sets get a quarter).")] = 2000,
    json_mode: JsonOpt = False,
    quiet: QuietOpt = False,
    verbose: VerboseOpt = False,
) -> None:
    """Run every stage for real on the embedded corpus, offline, in a few minutes on a CPU.

    Tokenizer, data preparation, budgeted pretraining, GLUE-style fine-tuning on tasks generated from the same
    corpus, and an attention conversion, all into [bold]--out[/]; a rerun reuses finished stages.
    """
    _run_stage("demo", json_mode, quiet, verbose, out=out, fresh=fresh, minutes=minutes, documents=documents,
               trials=trials, task_examples=task_examples)


@app.command("bench")
def bench(
    budget: Annotated[str, typer.Option("--budget", "-b", help="Train/arch preset or train budget JSON file.")] = "24",
    arch: Annotated[Optional[str], typer.Option("--arch", help="Arch budget (default: same preset as --budget).")] = None,
    hidden: Annotated[Optional[int], typer.Option("--hidden", help="Override hidden size.")] = None,
    layers: Annotated[Optional[int], typer.Option("--layers", help="Override number of layers.")] = None,
    heads: Annotated[Optional[int], typer.Option("--heads", help="Override attention heads.")] = None,
    intermediate: Annotated[Optional[int], typer.Option("--intermediate", help="Override FFN intermediate size.")] = None,
    vocab: Annotated[Optional[int], typer.Option("--vocab", help="Override vocabulary size.")] = None,
    micro_batch: Annotated[Optional[int], typer.Option("--micro-batch", help="Measure this micro-batch instead of searching.")] = None,
    threads: Annotated[Optional[int], typer.Option("--threads", help="CPU threads (default: torch's).")] = None,
    compile: Annotated[bool, typer.Option("--compile/--no-compile", help="Also measure torch.compile.")] = False,
    peak_tflops: Annotated[Optional[float], typer.Option("--peak-tflops", help="Override the GPU's peak bf16 TFLOP/s for MFU.")] = None,
    device: DeviceOpt = None,
    gpu: GpuOpt = None,
    out: Annotated[Optional[Path], typer.Option("--out", "-o", help="Also save the report JSON here.")] = None,
    json_mode: JsonOpt = False,
    quiet: QuietOpt = False,
    verbose: VerboseOpt = False,
) -> None:
    """Measure the real training step: largest micro-batch that fits, tokens/s, memory, MFU."""
    _run_stage("bench", json_mode, quiet, verbose, budget=budget, arch=arch, hidden=hidden, layers=layers,
               heads=heads, intermediate=intermediate, vocab=vocab, micro_batch=micro_batch, threads=threads,
               compile=compile, peak_tflops=peak_tflops, device=device, gpu=gpu, out=out)


# ----------------------------------------------------------------------------------------------------------
# budgets


@budgets_app.command("list")
def budgets_list(json_mode: JsonOpt = False) -> None:
    """List the shipped presets and their files."""
    rows = [
        {"preset": name, **{kind: str(budgets.resolve_path(kind, name)) for kind in budgets.KINDS}}
        for name in budgets.preset_names()
    ]
    if json_mode:
        print(json.dumps(rows, indent=2))
        return
    table = Table("preset", *budgets.KINDS, title=f"Budgets in {budgets.budgets_dir()}")
    for row in rows:
        table.add_row(row["preset"], *(Path(row[k]).name for k in budgets.KINDS))
    Console().print(table)


@budgets_app.command("show")
def budgets_show(
    name: Annotated[str, typer.Argument(help="Preset name (24, v2, demo) or a budget JSON file.")],
    kind: Annotated[Optional[str], typer.Option("--kind", "-k", help="Only this kind: data, arch, train or glue.")] = None,
    json_mode: JsonOpt = False,
) -> None:
    """Render a budget as a table (every field, its value and what it means)."""
    try:
        kinds = _kinds_for(name, kind)
        loaded = {k: budgets.load(k, name) for k in kinds}
    except CramError as exc:
        _fail(exc)
    if json_mode:
        print(json.dumps({k: b.model_dump(mode="json") for k, b in loaded.items()}, indent=2))
        return
    console = Console()
    for k, b in loaded.items():
        table = Table("field", "value", "meaning", title=f"{k} budget — {budgets.resolve_path(k, name)}")
        for field, value, doc in budgets.flatten(b):
            table.add_row(field, json.dumps(value), doc)
        console.print(table)


def _kinds_for(name: str, kind: str | None) -> list[str]:
    if kind is not None:
        if kind not in budgets.KINDS:
            raise UsageError(f"--kind {kind!r}: allowed: {', '.join(budgets.KINDS)}")
        return [kind]
    if name.endswith(".json") or Path(name).is_file():
        return [_kind_of_file(Path(name))]
    return list(budgets.KINDS)


def _kind_of_file(path: Path) -> str:
    prefix = path.name.partition("_budget")[0]
    if prefix in budgets.KINDS:
        return prefix
    raise UsageError(f"{path}: cannot tell the budget kind from the file name; pass --kind data|arch|train|glue")


@budgets_app.command("validate")
def budgets_validate(
    files: Annotated[Optional[list[Path]], typer.Argument(help="Budget files (default: every shipped budget). The kind comes from the file name or --kind.")] = None,
    kind: Annotated[Optional[str], typer.Option("--kind", "-k", help="Kind of the given files: data, arch, train or glue.")] = None,
) -> None:
    """Validate budget files; prints one line per problem and exits 2 if any file is bad."""
    paths = files or sorted(budgets.budgets_dir().glob("*_budget_*.json"))
    problems: list[str] = []
    console = Console()
    for path in paths:
        try:
            budgets.load(_kinds_for(str(path), kind)[0] if kind else _kind_of_file(path), path)
            console.print(f"[green]ok[/]   {path}", highlight=False)
        except CramError as exc:
            problems.extend(exc.lines)
    if problems:
        _fail(UsageError(*problems))
    console.print(f"{len(paths)} budget file(s) valid")


@budgets_app.command("schema")
def budgets_schema(
    out: Annotated[Optional[Path], typer.Option("--out", "-o", help="Folder for <kind>_budget.schema.json files (default: print to stdout).")] = None,
) -> None:
    """Write the JSON Schema of each budget kind, so editors can validate budget files."""
    from cramcli.utils import atomic

    schemas = {kind: budgets.json_schema(kind) for kind in budgets.KINDS}
    if out is None:
        print(json.dumps(schemas, indent=2))
        return
    for kind, schema in schemas.items():
        atomic.write_json(out / f"{kind}_budget.schema.json", schema)
    Console(stderr=True).print(f"wrote {len(schemas)} schemas to {out}")


def main() -> None:
    """Console-script entry point."""
    try:
        app()
    except CramError as exc:  # pragma: no cover - stages raise inside _run_stage; this is a last guard
        for line in exc.lines:
            _err.print(f"[bold red]error:[/] {line}", highlight=False)
        sys.exit(exc.exit_code)
