"""Runs `cram ARGS...` with one fault planted, chosen by the CRAM_FAULT environment variable (WHERE:N):

- `step:N`     SIGKILL when micro-step N starts;
- `save:N`     SIGKILL inside the N-th atomic folder write, its files written but not yet renamed into place
               (a checkpoint, or the final export);
- `metrics:N`  write half of the N-th metrics.jsonl line, then SIGKILL (a torn last line);
- `export:0`   SIGKILL once the final export's files are written, before they are swapped in;
- `fsize-export:BYTES`  a file-size limit (`ulimit -f`) from the final export on, with SIGXFSZ ignored so the
               write fails with EFBIG as on a full disk;
- `glue-trial:N`  SIGKILL when GLUE trial N (counted from 1) starts.

Used by tests/test_faults.py as `python tests/fault_driver.py pretrain ...`.
"""

from __future__ import annotations

import json
import os
import resource
import signal
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def _die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def _plant(where: str, n: int) -> None:
    calls = {"n": 0}

    def nth() -> bool:
        calls["n"] += 1
        return calls["n"] == n

    if where == "step":
        from cramcli.train.trainer import Trainer

        micro_step = Trainer._micro_step

        def step(self, **kw):  # type: ignore[no-untyped-def]
            if self.progress.micro_steps == n:
                _die()
            return micro_step(self, **kw)

        Trainer._micro_step = step  # type: ignore[method-assign]
    elif where == "save":
        from cramcli.utils import atomic

        fsync_tree = atomic._fsync_tree

        def flushed(folder: Path) -> None:
            fsync_tree(folder)
            if nth():
                _die()

        atomic._fsync_tree = flushed
    elif where == "metrics":
        from cramcli.train.metrics import MetricsLog

        log = MetricsLog.log

        def torn(self, row):  # type: ignore[no-untyped-def]
            if nth():
                line = json.dumps(row) + "\n"
                with self.path.open("a") as handle:
                    handle.write(line[: len(line) // 2])
                _die()
            return log(self, row)

        MetricsLog.log = torn  # type: ignore[method-assign]
    elif where in ("export", "fsize-export"):
        from cramcli.model.modeling import CrammedBertPreTrainedModel
        from cramcli.train.trainer import Trainer

        if where == "export":
            save = CrammedBertPreTrainedModel.save_pretrained

            def saved(self, *a, **kw):  # type: ignore[no-untyped-def]
                save(self, *a, **kw)
                _die()

            CrammedBertPreTrainedModel.save_pretrained = saved  # type: ignore[method-assign]
        else:
            export = Trainer.export

            def limited(self):  # type: ignore[no-untyped-def]
                signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
                resource.setrlimit(resource.RLIMIT_FSIZE, (n, resource.getrlimit(resource.RLIMIT_FSIZE)[1]))
                return export(self)

            Trainer.export = limited  # type: ignore[method-assign]
    elif where == "glue-trial":
        from cramcli.glue import finetune

        run_trial = finetune.run_trial

        def trial(*a, **kw):  # type: ignore[no-untyped-def]
            if nth():
                _die()
            return run_trial(*a, **kw)

        finetune.run_trial = trial
    else:
        raise SystemExit(f"unknown CRAM_FAULT {where!r}")


if __name__ == "__main__":
    fault = os.environ.get("CRAM_FAULT")
    if fault:
        where, _, count = fault.partition(":")
        _plant(where, int(count or 0))
    from cramcli.cli import app

    app(sys.argv[1:], prog_name="cram")
