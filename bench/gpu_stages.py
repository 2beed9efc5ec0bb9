"""The stage part of `bench/gpu_check.sh`: a CPU parity check of a converted checkpoint, and one JSON of every
stage the script ran (its exit code, seconds and report).

    python -m bench.gpu_stages convert-parity TRAINED CONVERTED OUT.json
    python -m bench.gpu_stages collect SECTIONS.tsv WORK OUT.json
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path
from typing import Any

REPORTS = {"pretrain": "pretrain.json", "resume": "run/report.json", "glue": "glue/report.json",
           "convert": "convert.json", "convert_parity": "convert_parity.json", "bench": "bench.json"}
"""Where each section leaves its report under the work folder (gpu_check.sh copies the first session's report
aside before the resume rewrites it)."""


STATUS = {"0": "ok", "3": "passed, flash-attn check skipped", "124": "timed out", "skip": "skipped"}


def convert_parity(trained: Path, converted: Path, out: Path) -> int:
    """Both checkpoints on the CPU in fp32, on rows of the embedded corpus: the MLM logits must agree (cram copies
    the weights bit for bit) and the loss must be finite. Exit 1 when they differ."""
    import torch

    from bench.parity import text_rows
    from cramcli.budgets import MaskingBudget
    from cramcli.data.tokenizer import CRAM_SPECIAL_IDS
    from cramcli.model.checkpoint import load_pretrained
    from cramcli.train.masking import mask_tokens

    a, b = load_pretrained(trained), load_pretrained(converted)
    config = a.config
    ids = text_rows(8, min(64, config.max_seq_length), config.vocab_size)
    inputs, labels = mask_tokens(ids, MaskingBudget(), mask_id=CRAM_SPECIAL_IDS.mask, vocab_size=config.vocab_size,
                                 special_ids=CRAM_SPECIAL_IDS.all, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        out_a, out_b = a(inputs, labels=labels), b(inputs, labels=labels)
    diff = float((out_a.logits - out_b.logits).abs().max())
    loss = float(out_a.loss)
    result = {"trained": str(trained), "converted": str(converted), "attention": b.config.attention,
              "device": "cpu", "max_abs_logit_diff": diff, "mlm_loss": loss, "ln_vocab": math.log(config.vocab_size),
              "ok": diff <= 1e-4 and math.isfinite(loss)}
    out.write_text(json.dumps(result, indent=2))
    print(f"convert parity on the CPU: max |Δlogit| {diff:.2e}, MLM loss {loss:.3f} (ln V {result['ln_vocab']:.2f}) "
          f"{'OK' if result['ok'] else 'FAILED'}")
    return 0 if result["ok"] else 1


def collect(sections: Path, work: Path, out: Path) -> int:
    """SECTIONS.tsv lines `name<TAB>rc<TAB>seconds` → one JSON with each section's report beside its status."""
    result: dict[str, Any] = {}
    for line in sections.read_text().splitlines():
        name, rc, seconds = line.split("\t")
        entry: dict[str, Any] = {"rc": rc, "seconds": float(seconds),
                                 "status": STATUS.get(rc, "failed")}
        report = work / REPORTS[name] if name in REPORTS else None
        if report is not None and report.is_file() and rc == "0":
            try:
                entry["report"] = json.loads(report.read_text())
            except ValueError as exc:
                entry["report_error"] = f"{report}: {exc}"
        result[name] = entry
    out.write_text(json.dumps(result, indent=2))
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) == 4 and argv[0] == "convert-parity":
        return convert_parity(Path(argv[1]), Path(argv[2]), Path(argv[3]))
    if len(argv) == 4 and argv[0] == "collect":
        return collect(Path(argv[1]), Path(argv[2]), Path(argv[3]))
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
