"""Faults a run meets in the wild: SIGKILL anywhere, a full disk (a file-size limit), a damaged shard, ids outside
the vocabulary, a state file that would run code, a torn metrics line. Each failure ends in one line, a non-zero
exit and no traceback; what was finished before stays intact, and a rerun or `--resume` completes.

Faults are planted by tests/fault_driver.py in a real `cram` process (SIGKILL, `RLIMIT_FSIZE` with SIGXFSZ
ignored, so writes fail with EFBIG as on a full disk). The SIGKILL of prepare-data is in test_data_pipeline.py.
"""

from __future__ import annotations

import json
import os
import pickle
import random
import resource
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from typer.testing import CliRunner

from cramcli.cli import app
from cramcli.data.prepared import PreparedData
from cramcli.train import checkpointing
from cramcli.utils import atomic, run_folder
from cramcli.utils.errors import UsageError
from cramcli.utils.jsonfile import read_rows

sys.path.insert(0, str(Path(__file__).parent))
from pretrain_helpers import write_budgets, write_prepared  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
DRIVER = Path(__file__).parent / "fault_driver.py"
runner = CliRunner()


def cram(*args: str, cwd: Path, fault: str | None = None, fsize: int | None = None,
         timeout: float = 180) -> subprocess.CompletedProcess:
    """`cram ARGS` in a fresh process, with a planted fault (fault_driver.py) or a file-size limit from the start."""

    def limit() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (fsize, fsize))

    env = {**os.environ, "PYTHONPATH": str(REPO), "COLUMNS": "400"}
    env.pop("CRAM_FAULT", None)
    if fault:
        env["CRAM_FAULT"] = fault
    return subprocess.run([sys.executable, str(DRIVER), *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=timeout, preexec_fn=limit if fsize else None)


def one_line_error(code: int, stderr: str, *fragments: str) -> str:
    """Exactly one `error:` line holding every fragment, a non-zero exit, no traceback; returns the line."""
    assert code not in (0, -signal.SIGKILL), stderr
    assert "Traceback" not in stderr, stderr
    errors = [line for line in stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, stderr
    for fragment in fragments:
        assert fragment in errors[0], errors[0]
    print(errors[0])  # `pytest -s` shows what people see
    return errors[0]


def pretrain_args(tmp: Path, out: str = "run", *extra: str) -> list[str]:
    return ["pretrain", "--budget", str(tmp / "train.json"), "--arch", str(tmp / "arch.json"), "--data",
            str(tmp / "data"), "--out", str(tmp / out), "--device", "cpu", "--quiet", *extra]


def invoke(*args: str):
    """`cram ARGS` in this process (stdout and stderr both in `.output`)."""
    res = runner.invoke(app, list(args))
    assert res.exception is None or isinstance(res.exception, SystemExit), repr(res.exception)
    assert "Traceback" not in res.output
    return res


@pytest.fixture(autouse=True)
def wide(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "400")  # rich wraps warnings at the terminal width; keep each on one line


@pytest.fixture
def tmp(tmp_path: Path) -> Path:
    write_prepared(tmp_path / "data")
    return tmp_path


# ----------------------------------------------------------------------------------------------------------
# SIGKILL anywhere


def test_killed_anywhere_resumes_to_bit_identical_weights_and_each_metrics_row_once(tmp):
    steps = 24
    write_budgets(tmp, schedule={"name": "budget-one-cycle"}, schedule_clock="steps", max_steps=steps,
                  checkpoint_every_minutes=1e-4, keep_checkpoints=2)
    # The reference runs in a fresh process too: the same threads and defaults as the killed runs get.
    assert cram(*pretrain_args(tmp, "reference", "--max-steps", str(steps)), cwd=tmp).returncode == 0
    run = tmp / "run"
    kills = [f"step:{random.Random(0).randint(3, 10)}", "save:3", "metrics:2", "export:0"]
    for fault in kills:
        has_state = bool(checkpointing.list_states(run))
        res = cram(*pretrain_args(tmp, "run", "--max-steps", str(steps), "--resume" if has_state else "--force"),
                   cwd=tmp, fault=fault)
        assert res.returncode == -signal.SIGKILL, (fault, res.stderr)
        # Only whole checkpoints are ever listed: the one a kill cut off sits in a hidden .partial folder.
        for state in checkpointing.list_states(run):
            checkpointing.load_state_file(state / "state.pt")
    assert not (run / "report.json").exists()
    res = cram(*pretrain_args(tmp, "run", "--max-steps", str(steps), "--resume"), cwd=tmp)
    assert res.returncode == 0, res.stderr
    assert "cut off" in res.stderr or "metrics" not in res.stderr  # a torn line, if still there, was said
    ref, got = load_file(tmp / "reference" / "final" / "model.safetensors"), load_file(run / "final" / "model.safetensors")
    assert ref.keys() == got.keys() and all(torch.equal(ref[k], got[k]) for k in ref)
    rows, ref_rows = read_rows(run / "metrics.jsonl"), read_rows(tmp / "reference" / "metrics.jsonl")
    assert [r["step"] for r in rows] == [r["step"] for r in ref_rows]  # each row once, in order
    assert [r["loss"] for r in rows] == [r["loss"] for r in ref_rows]
    assert not list(run.glob(".*partial")) and not list((run / "checkpoints").glob(".*partial"))


# ----------------------------------------------------------------------------------------------------------
# A full disk (a file-size limit)


def test_file_size_limit_during_a_checkpoint_keeps_the_previous_one(tmp):
    write_budgets(tmp, schedule={"name": "constant"})
    assert invoke(*pretrain_args(tmp, "run", "--max-steps", "4")).exit_code == 0
    # state.pt (~250 KB) does not fit under 100 KB; metrics.jsonl and run-config.json do.
    res = cram(*pretrain_args(tmp, "run", "--max-steps", "8", "--resume"), cwd=tmp, fsize=100_000)
    one_line_error(res.returncode, res.stderr, "step_00000008/state.pt: cannot write: file too large",
                   "checkpoint step_00000004 is intact; free space and run with --resume")
    assert [p.name for p in checkpointing.list_states(tmp / "run")] == ["step_00000004"]
    assert not list((tmp / "run" / "checkpoints").glob(".*partial"))
    res = invoke(*pretrain_args(tmp, "run", "--max-steps", "8", "--resume", "--json"))
    assert res.exit_code == 0 and json.loads(res.stdout)["micro_steps"] == 8


def test_file_size_limit_during_the_final_export_keeps_the_previous_final(tmp):
    write_budgets(tmp, schedule={"name": "constant"})
    assert invoke(*pretrain_args(tmp, "run", "--max-steps", "4")).exit_code == 0
    final = tmp / "run" / "final"
    before = {p.name: p.read_bytes() for p in final.iterdir()}
    res = cram(*pretrain_args(tmp, "run", "--max-steps", "8", "--resume"), cwd=tmp, fault="fsize-export:20000")
    one_line_error(res.returncode, res.stderr, "run/final: cannot write: file too large",
                   "the previous final/ is unchanged; the trained state is in checkpoint step_00000008; free space "
                   "and run with --resume to export it")
    assert {p.name: p.read_bytes() for p in final.iterdir()} == before
    assert not list(final.parent.glob(".final*"))
    res = invoke(*pretrain_args(tmp, "run", "--max-steps", "8", "--resume", "--json"))
    assert res.exit_code == 0 and json.loads(res.stdout)["micro_steps"] == 8
    assert (final / "model.safetensors").read_bytes() != before["model.safetensors"]


def test_a_full_disk_while_logging_names_the_log_and_the_checkpoint_to_resume_from(tmp, monkeypatch):
    import errno

    write_budgets(tmp, schedule={"name": "constant"})
    assert invoke(*pretrain_args(tmp, "run", "--max-steps", "4")).exit_code == 0
    real_open = Path.open

    class Full:  # an append on a full disk: the write raises ENOSPC, with no file name (as for any open file)
        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

        def write(self, text):
            raise OSError(errno.ENOSPC, "No space left on device")

    def opened(self, mode="r", *args, **kwargs):
        return Full() if self.name == "metrics.jsonl" and mode == "a" else real_open(self, mode, *args, **kwargs)

    monkeypatch.setattr(Path, "open", opened)
    res = invoke(*pretrain_args(tmp, "run", "--max-steps", "8", "--resume"))
    one_line_error(res.exit_code, res.output, "run/metrics.jsonl: cannot write: no space left on the device",
                   "checkpoint step_00000004 is intact; free space and run with --resume")
    assert res.exit_code == 1


def test_file_size_limit_during_prepare_data_keeps_the_earlier_folder(tmp_path, monkeypatch):
    from test_data_pipeline import budget_file, fixed_tokenizer, make_corpus

    monkeypatch.chdir(tmp_path)
    make_corpus(tmp_path / "raw")
    budget, tok, out = budget_file(tmp_path / "b.json", tmp_path / "raw"), fixed_tokenizer(tmp_path), tmp_path / "d"
    args = ["prepare-data", "--budget", str(budget), "--tokenizer", str(tok), "--out", str(out), "--workers", "1",
            "--quiet"]
    assert invoke(*args).exit_code == 0
    manifest = (out / "manifest.json").read_text()
    res = cram(*args, "--force", cwd=tmp_path, fsize=4_000)
    one_line_error(res.returncode, res.stderr, "cannot write: file too large",
                   f"the earlier prepared data in {out} is unchanged (the work folder was removed); free space and "
                   "run the same command again")
    assert (out / "manifest.json").read_text() == manifest and PreparedData(out).verify(ids=True)["verified"]
    assert not list(tmp_path.glob(".d.*.partial"))
    assert invoke(*args, "--force").exit_code == 0


# ----------------------------------------------------------------------------------------------------------
# Damaged prepared data


def test_a_flipped_byte_is_caught_before_training_and_named(tmp):
    write_budgets(tmp, schedule={"name": "constant"})
    assert invoke("prepare-data", "--verify", str(tmp / "data")).exit_code == 0  # intact: exit 0
    shard = tmp / "data" / "tokens_00000.bin"
    data = bytearray(shard.read_bytes())
    data[1000] ^= 0x01  # an id inside the vocabulary: only the checksum sees it
    shard.write_bytes(bytes(data))
    for res in (invoke(*pretrain_args(tmp, "run", "--max-steps", "4")), invoke("prepare-data", "--verify", str(tmp / "data"))):
        assert res.exit_code == 2
        one_line_error(res.exit_code, res.output, f"{shard}: checksum", "differs from the manifest's")
    assert not (tmp / "run").exists()  # nothing trained, no run folder made
    # --no-verify trains on it and says what it did not check.
    res = invoke(*pretrain_args(tmp, "run", "--max-steps", "2", "--no-verify"))
    assert res.exit_code == 0 and "--no-verify: 1 shard(s), 16,384 bytes" in res.output


def test_ids_outside_the_vocabulary_are_caught_and_named(tmp):
    write_budgets(tmp, schedule={"name": "constant"})
    shard = tmp / "data" / "tokens_00000.bin"
    data = bytearray(shard.read_bytes())
    data[len(data) // 2:] = b"\xff" * (len(data) - len(data) // 2)  # the second half: id 65535 in a 64-token vocab
    shard.write_bytes(bytes(data))
    res = invoke(*pretrain_args(tmp, "run", "--max-steps", "40", "--no-verify"))
    one_line_error(res.exit_code, res.output, f"{shard}: row 128 holds token id 65535 at position 0, outside the "
                   "vocabulary of 64")
    assert res.exit_code == 2
    res = invoke("prepare-data", "--verify", str(tmp / "data"))
    one_line_error(res.exit_code, res.output, f"{shard}: checksum")


# ----------------------------------------------------------------------------------------------------------
# Files that would run code


class _RunsCode:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):  # unpickling it would create `marker`
        return (os.mkdir, (str(self.marker),))


def test_a_state_file_that_would_run_code_is_refused(tmp):
    write_budgets(tmp, schedule={"name": "constant"})
    assert invoke(*pretrain_args(tmp, "run", "--max-steps", "4")).exit_code == 0
    marker = tmp / "executed"
    state = checkpointing.list_states(tmp / "run")[-1] / "state.pt"
    torch.save({"format": checkpointing.STATE_FORMAT, "rng": _RunsCode(marker)}, state)
    res = invoke(*pretrain_args(tmp, "run", "--max-steps", "8", "--resume"))
    one_line_error(res.exit_code, res.output, f"{state}: refused", "nothing was executed")
    assert res.exit_code == 2 and not marker.exists()
    with open(state, "wb") as handle:  # a bare pickle, not a torch archive
        pickle.dump({"rng": _RunsCode(marker)}, handle)
    res = invoke(*pretrain_args(tmp, "run", "--max-steps", "8", "--resume"))
    one_line_error(res.exit_code, res.output, f"{state}: refused", "nothing was executed")
    assert not marker.exists()


def test_an_original_checkpoint_that_would_run_code_is_refused(tmp_path):
    from cramcli.model.checkpoint import load_pretrained
    from cramcli.model.errors import CheckpointError

    marker = tmp_path / "executed"
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "crammedBERT", "arch": {}}))
    torch.save({"w": torch.zeros(2), "x": _RunsCode(marker)}, tmp_path / "pytorch_model.bin")
    with pytest.raises(CheckpointError, match="pytorch_model.bin: refused: .*nothing was executed"):
        load_pretrained(tmp_path)
    assert not marker.exists()


# ----------------------------------------------------------------------------------------------------------
# What a review of the writers found


def test_a_torn_last_metrics_line_is_dropped_with_a_warning(tmp):
    write_budgets(tmp, schedule={"name": "constant"})
    assert invoke(*pretrain_args(tmp, "run", "--max-steps", "4")).exit_code == 0
    metrics = tmp / "run" / "metrics.jsonl"
    with metrics.open("a") as handle:
        handle.write('{"step": 6, "lo')
    res = invoke(*pretrain_args(tmp, "run", "--max-steps", "8", "--resume"))
    assert res.exit_code == 0 and "the last line (line 3) is cut off" in res.output
    assert [r["step"] for r in read_rows(metrics)] == [2, 4, 6, 8]
    metrics.write_text('{"step": 2}\nnot json\n{"step": 4}\n')
    with pytest.raises(UsageError, match="line 2 is not a JSON row"):
        read_rows(metrics)


def test_resume_under_other_hours_continues_the_schedule_from_where_it_is():
    from cramcli.train.clock import ScheduleClock

    now = [0.0]
    first = ScheduleClock(100.0, now=lambda: now[0])
    first.start()
    now[0] = 30.0
    assert first.fraction(0) == pytest.approx(0.3)
    longer = ScheduleClock(200.0, now=lambda: now[0])
    longer.load_state_dict(first.state_dict())  # a resume with twice the hours
    longer.start()
    assert longer.fraction(0) == pytest.approx(0.3)  # no jump (a rescale would give 0.15)
    now[0] = 30.0 + 85.0
    assert longer.fraction(0) == pytest.approx(0.3 + 0.7 * 85 / 170) and longer.rescaled is not None
    now[0] = 30.0 + 170.0
    assert longer.fraction(0) == pytest.approx(1.0)
    now[0] = 30.0 + 85.0
    shorter = ScheduleClock(150.0, now=lambda: 0.0)
    shorter.load_state_dict(longer.state_dict())  # extensions chain from the fraction reached
    shorter.start()
    assert shorter.fraction(0) == pytest.approx(0.65)
    same = ScheduleClock(150.0)
    same.load_state_dict(shorter.state_dict())
    assert same.anchor == shorter.anchor and same.rescaled is None


def test_low_free_space_is_warned_before_a_checkpoint(tmp_path, monkeypatch):
    import shutil
    from collections import namedtuple

    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda path: usage(10**9, 10**9 - 1000, 1000))
    said: list[str] = []
    checkpointing.save_state(tmp_path, 2, {"w": torch.zeros(1000)}, keep=1, warn=said.append)
    assert said == [f"{tmp_path / 'checkpoints'}: the checkpoint needs about 4.0 KB but only 1.0 KB is free; the "
                    "write will likely fail"]


def test_only_a_damaged_state_rolls_back_and_says_which_and_why(tmp_path, monkeypatch):
    for step in (2, 4):
        checkpointing.save_state(tmp_path, step, {"step": step}, keep=3)
    newest = tmp_path / "checkpoints" / "step_00000004" / "state.pt"
    newest.write_bytes(newest.read_bytes()[:100])
    said: list[str] = []
    assert checkpointing.load_latest(tmp_path, warn=said.append)[1] == {"step": 2}
    assert said == ["step_00000004: skipped, state.pt is truncated or corrupt (not a complete torch archive); "
                    "resuming from the checkpoint before it"]
    checkpointing.save_state(tmp_path, 4, {"step": 4}, keep=3)

    def broken(*args, **kwargs):
        raise ImportError("a module the state needs is missing")

    monkeypatch.setattr(torch, "load", broken)
    with pytest.raises(ImportError):  # not a damaged file: no silent roll-back
        checkpointing.load_latest(tmp_path, warn=said.append)


def test_replacing_a_folder_leaves_the_old_or_the_new_one(tmp_path, monkeypatch):
    final = tmp_path / "final"
    with atomic.atomic_dir(final) as work:
        (work / "v").write_text("old")
    with atomic.atomic_dir(final, force=True) as work:  # the exchange (renameat2) where the system has it
        (work / "v").write_text("new")
    assert (final / "v").read_text() == "new" and sorted(p.name for p in tmp_path.iterdir()) == ["final"]

    # Without the exchange: a crash between the two renames leaves the old folder aside, and the next write
    # of that folder puts it back first.
    monkeypatch.setattr(atomic, "_exchange", lambda a, b: False)
    renames = []
    real_rename = Path.rename

    def crash_on_second(self: Path, target: Path) -> Path:
        renames.append(self)
        if len(renames) == 2:
            raise KeyboardInterrupt  # the process dies here
        return real_rename(self, target)

    monkeypatch.setattr(Path, "rename", crash_on_second)
    with pytest.raises(KeyboardInterrupt), atomic.atomic_dir(final, force=True) as work:
        (work / "v").write_text("newer")
    monkeypatch.setattr(Path, "rename", real_rename)
    assert not final.exists() and (tmp_path / ".final.old" / "v").read_text() == "new"
    atomic.restore_aside(final)
    assert (final / "v").read_text() == "new" and not (tmp_path / ".final.old").exists()


def test_work_folders_are_deleted_only_when_their_owner_is_certainly_dead(tmp_path, monkeypatch):
    import socket

    final = tmp_path / "out"
    done = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead_pid = int(done.stdout)

    def partial(name: str, owner: dict | None) -> Path:
        folder = tmp_path / f".out.{name}.partial"
        folder.mkdir()
        if owner is not None:
            (folder / run_folder.OWNER).write_text(json.dumps(owner))
        return folder

    host = socket.gethostname()
    dead = partial("dead0000", {"pid": dead_pid, "host": host})
    other_host = partial("remote00", {"pid": dead_pid, "host": host + "-elsewhere"})
    unwritten = partial("fresh000", None)
    other_user = partial("eperm000", {"pid": 1, "host": host})
    other_output = tmp_path / ".out.x.dead0000.partial"  # the work folder of an output named `out.x`
    other_output.mkdir()
    (other_output / run_folder.OWNER).write_text(json.dumps({"pid": dead_pid, "host": host}))

    real_kill = os.kill

    def kill(pid: int, sig: int) -> None:
        if pid == 1:
            raise PermissionError(1, "Operation not permitted")  # alive, another user's
        real_kill(pid, sig)

    monkeypatch.setattr(os, "kill", kill)
    assert run_folder.remove_dead_partials(final) == [dead]
    assert all(p.is_dir() for p in (other_host, unwritten, other_user, other_output))


def test_ownership_is_checked_again_once_the_lock_is_held(tmp_path, monkeypatch):
    import contextlib

    folder, real_locked = tmp_path / "out", run_folder.locked

    @contextlib.contextmanager
    def racing(path, command, **kw):
        with real_locked(path, command, **kw):
            (folder / "theirs.txt").write_text("x")  # another program filled the folder after the first check
            yield

    monkeypatch.setattr(run_folder, "locked", racing)
    with pytest.raises(UsageError, match="files cram did not create"), \
            run_folder.open_folder(folder, command="pretrain", settings_fingerprint="f", force=True):
        pass
    assert (folder / "theirs.txt").exists() and not (folder / run_folder.MARKER).exists()


# ----------------------------------------------------------------------------------------------------------
# SIGKILL during GLUE


def test_killed_glue_reruns_only_what_was_unfinished(tmp_path):
    from test_glue_finetune import _glue, _tokenizer

    from cramcli import model
    from cramcli.budgets import ArchBudget
    from cramcli.model import checkpoint

    torch.manual_seed(0)
    arch = ArchBudget(num_layers=2, hidden_size=32, num_heads=2, intermediate_size=64, vocab_size=64)
    _tokenizer(tmp_path / "tokenizer.json")
    ck = tmp_path / "ck"
    checkpoint.save_checkpoint(model.CrammedBertForMaskedLM(model.CrammedBertConfig.from_arch(arch)), ck,
                               tokenizer_path=tmp_path / "tokenizer.json")
    glue = _glue(tmp_path / "glue", n_train=16, n_dev=8)
    args = ["glue", "--model", str(ck), "--glue-dir", str(glue), "--tasks", "rte", "--trials", "3", "--budget",
            "demo", "--epochs", "1", "--device", "cpu", "--quiet"]
    res = cram(*args, cwd=tmp_path, fault="glue-trial:3")
    assert res.returncode == -signal.SIGKILL, res.stderr
    trials = ck / "glue" / "trials"
    finished = {p.name: p.read_bytes() for p in trials.glob("*.json")}
    assert sorted(finished) == ["rte_0.json", "rte_1.json"] and not (ck / "glue" / "results.json").exists()
    # The chart (tens of KB) does not fit under the limit; the trials (1 KB each) and results.json do.
    res = cram(*args, cwd=tmp_path, fsize=12_000)
    one_line_error(res.returncode, res.stderr, "glue.png: cannot write: file too large",
                   "the 3 finished trial(s)", "are intact and a rerun reuses them")
    finished = {p.name: p.read_bytes() for p in trials.glob("*.json")}
    assert invoke(*args).exit_code == 0
    assert {name: (trials / name).read_bytes() for name in finished} == finished  # reused, not retrained
    results = json.loads((ck / "glue" / "results.json").read_text())
    assert [t["trial"] for t in results["tasks"]["rte"]["trials"]] == [0, 1, 2]


def test_rows_of_a_verified_folder_are_the_written_ones(tmp):
    # The id check reads through the same memory maps training does: a clean folder passes untouched.
    data = PreparedData(tmp / "data")
    report = data.verify(ids=True)
    assert report["verified"] == ["tokens_00000.bin"] and report["unchecked"] == []
    raw = np.fromfile(tmp / "data" / "tokens_00000.bin", dtype=np.uint16).reshape(-1, data.seq_length)
    assert np.array_equal(data.rows(0, len(data)), raw.astype(np.int64))
