"""`cram compare`: two tiny recipes for a few seconds each, two repeats, scored on the same held-out rows at the
same times; a stopped compare resumes with the finished arms reused; bad input gets one line."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cramcli.cli import app
from cramcli.stages import compare as stage
from cramcli.train import compare
from cramcli.utils.console import Output
from tests.pretrain_helpers import write_budgets, write_prepared

runner = CliRunner()
MINUTES = 0.03  # 1.8 s of training per arm


@pytest.fixture
def setup(tmp_path):
    data = write_prepared(tmp_path / "data", heldout=24)
    train, arch = write_budgets(tmp_path)
    slow = json.loads(train.read_text())
    slow["optimizer"]["lr"] = 1e-4
    (tmp_path / "slow.json").write_text(json.dumps(slow))
    return tmp_path, data, [f"{train}:{arch}", f"{tmp_path / 'slow.json'}:{arch}"]


def _compare(tmp_path: Path, data: Path, recipes: list[str], **kw) -> dict:
    stage.run(Output(quiet=True), recipe=recipes, minutes=MINUTES, repeats=2, data=data, out=tmp_path / "cmp",
              device="cpu", threads=1, **kw)
    return json.loads((tmp_path / "cmp" / "compare.json").read_text())


def test_two_recipes_two_repeats_scored_at_the_same_times(setup):
    tmp_path, data, recipes = setup
    report = _compare(tmp_path, data, recipes)
    assert [r["name"] for r in report["recipes"]] == ["train:arch", "slow:arch"] and report["repeats"] == 2
    times = report["times_s"]
    assert times[-1] == pytest.approx(MINUTES * 60) and times[:-1] == pytest.approx([0.3 * k for k in range(1, 6)])
    for row in report["recipes"]:
        final = row["loss"][f"{times[-1]:g}"]
        assert final["n"] == 2 and final["spread"] >= 0 and row["tokens"]["mean"] > 0 and row["tokens_per_s"]["n"] == 2
    fast, slow = report["recipes"]
    # lr 1e-2 against 1e-4 for the same 1.8 s: the gap is far beyond the spread, and the verdict says so.
    assert fast["loss"][f"{times[-1]:g}"]["mean"] < slow["loss"][f"{times[-1]:g}"]["mean"]
    assert "higher (worse), beyond the spread" in slow["verdict"] and fast["verdict"] == "baseline"
    assert slow["reached_first_final"] == "0/2" and slow["time_to_first_final_s"]["mean"] is None
    assert (tmp_path / "cmp" / "compare.png").read_bytes()[:4] == b"\x89PNG"
    arms = sorted((tmp_path / "cmp" / "arms").iterdir())
    assert len(arms) == 4 and all((a / "arm.json").is_file() for a in arms)
    for arm in arms:  # each evaluation stands for one of the common times (the last for the end)
        curve = json.loads((arm / "arm.json").read_text())["curve"]
        assert all(any(abs(r["due_s"] - t) < 1e-6 for t in times[:-1]) for r in curve[:-1]) and len(curve) >= 3


def test_a_stopped_compare_reuses_finished_arms(setup):
    tmp_path, data, recipes = setup
    _compare(tmp_path, data, recipes)
    arms = sorted((tmp_path / "cmp" / "arms").iterdir())
    stamps = {a.name: (a / "arm.json").stat().st_mtime_ns for a in arms}
    (arms[-1] / "arm.json").unlink()  # as if killed while training the last arm
    again = _compare(tmp_path, data, recipes)
    after = {a.name: (a / "arm.json").stat().st_mtime_ns for a in arms}
    assert all(after[a.name] == stamps[a.name] for a in arms[:-1])  # reused, not retrained
    assert after[arms[-1].name] != stamps[arms[-1].name] and len(again["recipes"]) == 2
    # Another --minutes is another setting: every arm trains again.
    stage.run(Output(quiet=True), recipe=recipes, minutes=MINUTES / 2, repeats=1, data=data, out=tmp_path / "cmp",
              device="cpu", threads=1)
    assert (arms[0] / "arm.json").stat().st_mtime_ns != stamps[arms[0].name]


def test_verdict_names_no_winner_inside_the_spread():
    base = {"name": "a", "loss": {"60": {"mean": 3.00, "spread": 0.02, "n": 2}}}
    close = {"name": "b", "loss": {"60": {"mean": 2.97, "spread": 0.02, "n": 2}}}
    far = {"name": "c", "loss": {"60": {"mean": 2.90, "spread": 0.02, "n": 2}}}
    assert "inside the spread (±0.0400), no winner" in compare.verdict(base, close, "60")
    assert "lower (better), beyond the spread" in compare.verdict(base, far, "60")
    one = {"name": "d", "loss": {"60": {"mean": 2.5, "spread": 0.0, "n": 1}}}
    assert "no spread" in compare.verdict(base, one, "60")


def test_time_to_reach_interpolates_between_evaluations():
    curve = [{"due_s": 10.0, "heldout_loss": 5.0}, {"due_s": 20.0, "heldout_loss": 4.0},
             {"due_s": 29.9, "heldout_loss": 3.0}]
    assert compare.time_to_reach(curve, 4.5, 30.0) == pytest.approx(15.0)
    assert compare.time_to_reach(curve, 3.0, 30.0) == pytest.approx(30.0)
    assert compare.time_to_reach(curve, 2.0, 30.0) is None


def _cli(tmp_path: Path, *args: str):
    old = os.getcwd()
    os.chdir(tmp_path)
    try:
        return runner.invoke(app, ["compare", "--minutes", "0.01", "--device", "cpu", *args])
    finally:
        os.chdir(old)


def test_bad_inputs_get_one_line(setup):
    tmp_path, data, recipes = setup
    cases = {
        "unknown budget": (["--recipe", "nope", "--recipe", recipes[0], "--data", str(data)], "--recipe nope"),
        "one recipe": (["--recipe", recipes[0], "--data", str(data)], "at least two recipes"),
    }
    big = json.loads(Path(recipes[0].split(":")[1]).read_text()) | {"vocab_size": 128}
    (tmp_path / "big.json").write_text(json.dumps(big))
    cases["unequal vocab"] = (["--recipe", recipes[0], "--recipe", f"{recipes[1].split(':')[0]}:{tmp_path / 'big.json'}",
                               "--data", str(data)], "different vocab_size")
    plain = write_prepared(tmp_path / "plain")
    cases["no held-out"] = (["--recipe", recipes[0], "--recipe", recipes[1], "--data", str(plain)], "no held-out split")
    cases["bad repeats"] = (["--recipe", recipes[0], "--recipe", recipes[1], "--repeats", "0"], "--repeats 0")
    for name, (args, expected) in cases.items():
        result = _cli(tmp_path, *args)
        assert result.exit_code == 2, (name, result.output)
        lines = [line for line in result.output.splitlines() if line.strip()]
        assert len(lines) == 1 and expected in lines[0] and "Traceback" not in result.output, (name, result.output)


def test_sigterm_mid_compare_then_the_same_command_finishes_it(setup):
    tmp_path, data, recipes = setup
    cmd = [sys.executable, "-m", "cramcli", "compare", "-r", recipes[0], "-r", recipes[1], "--minutes", "0.05",
           "--data", str(data), "--out", str(tmp_path / "cmp"), "--device", "cpu", "--threads", "1", "--quiet"]
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    first = tmp_path / "cmp" / "arms" / "00-train-arch_seed0" / "arm.json"
    deadline = time.monotonic() + 120
    while not first.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)
    time.sleep(1.0)  # inside the second arm's training
    proc.send_signal(signal.SIGTERM)
    # 130: the arm's trainer caught it and stopped cleanly (as after Ctrl-C); -SIGTERM: killed between arms.
    assert proc.wait(timeout=60) in (130, -signal.SIGTERM)
    assert first.exists() and not (tmp_path / "cmp" / "compare.json").exists()
    stamp = first.stat().st_mtime_ns
    done = subprocess.run(cmd, env=env, capture_output=True, timeout=180)
    assert done.returncode == 0, done.stderr.decode()[-2000:]
    assert first.stat().st_mtime_ns == stamp  # the finished arm was reused
    report = json.loads((tmp_path / "cmp" / "compare.json").read_text())
    assert all(row["loss"][f"{report['times_s'][-1]:g}"]["n"] == 1 for row in report["recipes"])
