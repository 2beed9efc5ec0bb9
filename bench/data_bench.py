"""prepare-data throughput and memory on real text: 10 % and 100 % of ../shared/data/corpus/enwiki-2015-sample.

Each size runs `cram prepare-data` with the 24-hour data budget (C4 settings: vocab 32768, 128-token rows,
filter, exact + near dedup, sentence-end ordering) in a fresh subprocess; tokens/s is end to end (tokens
written ÷ wall time of the process, imports included) and peak RSS is the process's ru_maxrss. Memory must
stay flat in corpus size: the check fails if peak RSS grows more than 20 % from 10 % to 100 %.

The tokenizer trains on a fixed sample, as in the 24-hour budget (2 M of 25 M documents): here
`tokenizer.max_training_documents` is 200, below the 10 % run's document count, so both sizes train on the
same amount of text and the comparison measures the streaming pipeline. (The trainer's word counts grow with
the text it is given, not with the corpus.)
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CORPUS = Path(__file__).resolve().parents[2] / "shared" / "data" / "corpus" / "enwiki-2015-sample"
MAX_RSS_GROWTH = 0.20
TOKENIZER_DOCUMENTS = 200


def bench_budget(work: Path) -> Path:
    """The 24-hour data budget with the tokenizer's training sample fixed (see the module docstring)."""
    from cramcli import budgets

    data = budgets.load("data", "24").model_dump(mode="json")
    data["tokenizer"]["max_training_documents"] = TOKENIZER_DOCUMENTS
    path = work / "data_budget_bench.json"
    path.write_text(json.dumps(data))
    return path


def run_once(files: list[Path], work: Path, name: str) -> dict[str, float]:
    """One prepare-data run on `files` in a fresh process; returns tokens, seconds, tokens/s, peak RSS."""
    folder = work / name
    folder.mkdir()
    for file in files:
        (folder / file.name).symlink_to(file)
    cmd = [sys.executable, "-m", "cramcli", "prepare-data", "--budget", str(bench_budget(work)), "--source", str(folder),
           "--out", str(work / f"out_{name}"), "--json", "--quiet"]
    out_file, err_file = work / f"{name}.out", work / f"{name}.err"
    start = time.perf_counter()
    # Output goes to files, not pipes: nobody reads a pipe while wait4 blocks, so a full one would deadlock.
    with open(out_file, "w") as stdout, open(err_file, "w") as stderr:
        proc = subprocess.Popen(cmd, cwd=work, stdout=stdout, stderr=stderr)
        # wait4 gives this child's own rusage (ru_maxrss in KiB on Linux), unlike RUSAGE_CHILDREN's running max.
        _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - start
    code = os.waitstatus_to_exitcode(status)
    if code != 0:
        raise RuntimeError(f"prepare-data failed on {name} ({code}): {err_file.read_text().strip()[-500:]}")
    report = json.loads(out_file.read_text())
    tokens = report["counts"]["tokens"]
    return {
        "files": len(files),
        "documents": report["counts"]["documents_read"],
        "tokens": tokens,
        "seconds": round(seconds, 2),
        "tokens_per_s": round(tokens / seconds),
        "pipeline_tokens_per_s": report["tokens_per_second"],
        "peak_rss_mib": round(usage.ru_maxrss / 1024, 1),
        "timings_s": report["timings_s"],
    }


def main() -> int:
    if not CORPUS.is_dir():
        print(f"data bench: skipped ({CORPUS} not present)")
        return 0
    files = sorted(p for p in CORPUS.iterdir() if p.is_file() and not p.name.startswith("."))
    tenth = files[: max(1, round(len(files) / 10))]
    with tempfile.TemporaryDirectory(prefix="cram-data-bench-") as tmp:
        results = {"10%": run_once(tenth, Path(tmp), "p10"), "100%": run_once(files, Path(tmp), "p100")}
    growth = results["100%"]["peak_rss_mib"] / results["10%"]["peak_rss_mib"] - 1
    print("data bench: cram prepare-data --budget 24 on", CORPUS)
    for name, r in results.items():
        print(f"  {name:>4}: {r['files']} files, {r['documents']} docs, {r['tokens']:,} tokens in {r['seconds']} s"
              f" = {r['tokens_per_s']:,} tokens/s end to end ({r['pipeline_tokens_per_s']:,.0f} in the pipeline),"
              f" peak RSS {r['peak_rss_mib']} MiB; phases {r['timings_s']}")
    ok = growth <= MAX_RSS_GROWTH
    print(f"  peak RSS growth 10% → 100%: {growth:+.1%} (limit +{MAX_RSS_GROWTH:.0%}): {'ok' if ok else 'FAILED'}")
    out = Path("outputs/bench/data.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"data_bench": results, "rss_growth": round(growth, 4)}, indent=2))
    print(f"  saved {out}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
