"""Command-line options shared by several stages, declared once. A stage's `run` signature *is* its command line:
`cli.py` turns the `Annotated[..., typer.Option(...)]` parameters into flags, so an option is written in one place.
The metadata does nothing when a stage is called from Python (tests, scripts)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

Force = Annotated[bool, typer.Option("--force", help="Replace an earlier result at --out (only a folder cram made).")]
Seed = Annotated[int, typer.Option("--seed", help="Random seed.")]
Device = Annotated[Optional[str], typer.Option("--device", help="cpu, cuda or cuda:N (default: cuda if present, else cpu).")]
Gpu = Annotated[Optional[int], typer.Option("--gpu", help="Shorthand for --device cuda:N.")]
PeakTflops = Annotated[Optional[float], typer.Option("--peak-tflops", help="Peak TFLOP/s of one device for MFU (default: the known-GPU table).")]
TrainBudget = Annotated[str, typer.Option("--budget", "-b", help="Train budget: preset name (24, v2, modern, demo) or JSON file.")]
DataBudget = Annotated[str, typer.Option("--budget", "-b", help="Data budget: preset name (24, v2, modern, demo) or JSON file.")]
GlueBudget = Annotated[str, typer.Option("--budget", "-b", help="GLUE budget: preset name (24 = GLUE-sane, demo) or JSON file.")]
ArchBudget = Annotated[Optional[str], typer.Option("--arch", help="Arch budget: preset name or JSON file (default: same preset as --budget).")]
Source = Annotated[Optional[str], typer.Option("--source", "-s", help="Raw text: hf:NAME[:CONFIG], a local file/folder (txt, jsonl[.gz|.zst], json, parquet), or 'embedded' (default: the budget's).")]
MaxDocuments = Annotated[Optional[int], typer.Option("--max-documents", help="Read at most this many raw documents (default: the budget's).")]
Precision = Annotated[Optional[str], typer.Option("--precision", help="bf16, fp16 (with a GradScaler, the original's) or fp32 (default: the budget's).")]
OutFolder = Annotated[Optional[Path], typer.Option("--out", "-o", help="Output folder (default: under outputs/).")]
RunBudget = Annotated[Optional[str], typer.Option("--budget", "-b", help="With no checkpoint given: take the run `cram pretrain --budget NAME` wrote (outputs/runs/NAME) instead of the newest finished one.")]
