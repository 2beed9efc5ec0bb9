"""Stage `convert-attention` (alias `convert`): which checkpoint (the path given, else the newest finished run,
`model/runs.py`) and where to (`-o`, else `model/runs.converted_folder`) → `model/switch_attention.py` (the
rewrite and its parity check) → report.
"""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from rich.table import Table

from cramcli.stages import options
from cramcli.utils import run_folder
from cramcli.utils.console import Output
from cramcli.utils.errors import UsageError


class Attention(str, Enum):
    pytorch = "pytorch"
    flash = "flash"


def run(
    output: Output,
    checkpoint: Annotated[Optional[Path], typer.Argument(help="Checkpoint folder: cram's own, an original cramming v1/v2 checkpoint, or an original run folder (default: the newest finished run under outputs/runs).")] = None,
    *,
    out: Annotated[Optional[Path], typer.Option("--out", "-o", help="Output checkpoint folder (default: RUN/final-<attention> for a cram run, else outputs/converted/<name>-<attention>).")] = None,
    attention: Annotated[Attention, typer.Option("--attention", "-a", help="Target attention implementation.")] = Attention.pytorch,
    device: options.Device = None,
    gpu: options.Gpu = None,
    force: options.Force = False,
    budget: options.RunBudget = None,
) -> None:
    """Rewrite a checkpoint for another attention implementation (flash-attn fused layout ↔ plain PyTorch),
    importing original cramming checkpoints on the way, and check parity on a probe batch."""
    from cramcli.model.attention import flash_available
    from cramcli.model.checkpoint import CheckpointError, resolve
    from cramcli.model.runs import converted_folder, pick_run
    from cramcli.model.switch_attention import TARGETS, switch_attention
    from cramcli.utils.device import setup_device

    attention = getattr(attention, "value", attention)
    if attention not in TARGETS:
        raise UsageError(f"--attention {attention}: unsupported target; choose one of {', '.join(TARGETS)}")
    checkpoint = pick_run(checkpoint, budget=budget, flag="CHECKPOINT", say=output.info)
    out = Path(out) if out is not None else converted_folder(resolve(checkpoint), attention)
    if run_folder.check_owner(out, "convert-attention") is not None and not force:
        raise UsageError(f"--out {out}: already exists; pass --force to replace it or choose another --out")
    if out.resolve() == resolve(checkpoint).resolve():
        raise UsageError(f"--out {out}: is the source checkpoint itself; write to another folder")
    dev = setup_device(device, gpu)
    real_flash = dev.type == "cuda" and flash_available()
    if attention == "flash" and dev.type == "cuda" and not real_flash:
        raise UsageError("--attention flash --device cuda: the flash-attn package is not installed "
                         "(pip install -e '.[flash]'), so its parity cannot be checked; or convert on the CPU")
    try:  # the model layer's input errors name the file and the fix: one line, exit 2
        report = switch_attention(checkpoint, out, attention, dev, real_flash, force=force)
    except CheckpointError as exc:
        raise UsageError(str(exc)) from None
    run_folder.write_marker(out, "convert-attention", run_folder.fingerprint(report["parity"]))
    output.report(report, _table(report), out / "report.json")


def _table(report: dict[str, Any]) -> Table:
    parity = report["parity"]
    table = Table(title="convert-attention", show_header=False, title_justify="left")
    table.add_column(style="bold")
    table.add_column()
    table.add_row("source", f"{report['source']} ({report['source_format']}, {report['source_attention']})")
    table.add_row("written", f"{report['out']} (attention {report['target_attention']}, layout {report['layout']})")
    table.add_row("weights", f"{report['num_tensors']} tensors, {report['num_parameters']:,} parameters, bit-identical")
    if parity["flash_kernel"] not in (None, "checked"):  # the kernel itself was not run: say so in yellow
        table.add_row("flash parity", f"[yellow]{parity['flash_kernel']}[/]")
    table.add_row("parity", f"max |Δlogits| = {parity['max_abs_delta_logits']:.3g} (≤ {parity['tolerance']:g}) on "
                            f"{parity['probe'][0]}×{parity['probe'][1]} tokens, {parity['dtype']} {parity['device']}, "
                            f"{parity['source_backend']} vs {parity['converted_backend']}")
    table.add_row("tokenizer", ", ".join(report["tokenizer_files"]) or "none")
    if report["special_ids"]:
        table.add_row("special ids", ", ".join(f"{k} {v}" for k, v in report["special_ids"].items() if v is not None))
    for note in report["notes"]:
        table.add_row("note", note)
    return table
