"""The held-out split and its evaluation: prepare-data sets whole documents aside (raw text) or seeded blocks of
rows (pre-tokenized; a corpus's own validation split when it has one), training never reads them, and
`pretrain` scores them with one fixed protocol on a paused clock."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from cramcli.data.pipeline import heldout_documents
from cramcli.data.prepared import PreparedData
from cramcli.data.pretokenized import heldout_blocks, row_roles
from cramcli.data.tokenizer import SEP_ID, SpecialIds, load_tokenizer
from cramcli.stages import pretrain
from cramcli.train.clock import ScheduleClock
from cramcli.train.heldout import HeldOutEval, fixed_masks
from cramcli.utils.console import Output
from tests.pretrain_helpers import SPECIALS, VOCAB, write_budgets, write_prepared
from tests.test_data_corpus import cli, data_budget, parquet_corpus, prepared_folders, token_rows
from tests.test_data_pipeline import budget_file, corpus, decoded_documents, expected_documents, prepare, squash  # noqa: F401

SPECIAL = SpecialIds(pad=0, cls=4, sep=5, mask=6, unk=3, tokens={t: i for i, t in enumerate(SPECIALS)})


def _documents(ids: np.ndarray, tok) -> list[str]:
    docs, current = [], []
    for token in ids.ravel().tolist():
        if token == SEP_ID:
            docs.append(squash(tok.decode(current)))
            current = []
        else:
            current.append(token)
    return docs


def test_raw_text_holds_out_whole_documents_that_training_never_sees(corpus):  # noqa: F811
    root, planted = corpus
    out = prepare(budget_file(root / "b.json", root / "raw", validation={"share": 0.1, "max_rows": 1000}))
    data = PreparedData(out)
    record = data.manifest["heldout"]
    assert record["origin"] == "documents" and record["num_rows"] > 0 and 10 <= record["documents"] <= 14
    tok = load_tokenizer(data.tokenizer_path)
    train = [squash(d) for d in decoded_documents(out)]
    heldout = _documents(data.heldout_rows(), tok)
    expected = {squash(t) for t in expected_documents(root, planted)}
    assert set(heldout) <= expected and set(train) <= expected
    assert not set(heldout) & set(train)  # whole documents, on one side only
    assert len(heldout) >= record["documents"] - 1  # only the one cut by the held-out rows' dropped tail is missing
    # Deterministic from the seed (the same documents); another seed holds out other documents.
    again = PreparedData(prepare(budget_file(root / "b.json", root / "raw", validation={"share": 0.1, "max_rows": 1000}),
                                 out=root / "again"))
    assert _documents(again.heldout_rows(), load_tokenizer(again.tokenizer_path)) == heldout
    other = PreparedData(prepare(budget_file(root / "c.json", root / "raw", seed=7,
                                             validation={"share": 0.1, "max_rows": 1000})))
    assert set(_documents(other.heldout_rows(), load_tokenizer(other.tokenizer_path))) != set(heldout)


def test_held_out_rows_are_capped_and_zero_turns_the_split_off(corpus):  # noqa: F811
    root, _ = corpus
    capped = PreparedData(prepare(budget_file(root / "b.json", root / "raw", validation={"share": 0.5, "max_rows": 3})))
    assert capped.manifest["heldout"]["num_rows"] == 3 and len(capped.heldout_rows()) == 3
    off = PreparedData(prepare(budget_file(root / "c.json", root / "raw", validation={"share": 0})))
    assert off.manifest["heldout"] is None and off.heldout_rows() is None


def test_verify_checks_the_heldout_shards_too(corpus):  # noqa: F811
    from cramcli.utils.errors import UsageError

    root, _ = corpus
    out = prepare(budget_file(root / "b.json", root / "raw", validation={"share": 0.1, "max_rows": 1000}))
    shard = out / "heldout_00000.bin"
    assert PreparedData(out).manifest["heldout"]["shards"][0]["checksum"]
    data = bytearray(shard.read_bytes())
    data[10] ^= 0x01  # a flipped bit
    shard.write_bytes(bytes(data))
    with pytest.raises(UsageError, match="heldout_00000.bin: checksum"):
        PreparedData(out).verify()


def test_heldout_document_choice():
    chosen = heldout_documents(1000, 0.005, 89)
    assert chosen.sum() == 5 and np.array_equal(chosen, heldout_documents(1000, 0.005, 89))
    assert heldout_documents(3, 0.001, 89).sum() == 1 and heldout_documents(1, 0.5, 89).sum() == 0
    assert heldout_documents(100, 0.0, 89).sum() == 0


def test_pretokenized_blocks_leave_a_gap_on_each_side():
    length, chosen = heldout_blocks(1000, 0.05, 10_000, 89)
    heldout, dropped = row_roles(np.arange(1000), length, chosen)
    assert heldout.sum() == length * len(chosen) and 50 <= heldout.sum() < 50 + length
    for i in np.flatnonzero(heldout):  # every held-out row's neighbours are held out or dropped, never trained
        for j in (i - 1, i + 1):
            assert j < 0 or j >= 1000 or heldout[j] or dropped[j]


def test_pretokenized_corpus_blocks_and_its_own_validation_split(tmp_path):
    rows = token_rows(200, 0)
    corpus_dir = parquet_corpus(tmp_path / "pile", [rows])
    budget = data_budget(tmp_path / "b.json", validation={"share": 0.1, "max_rows": 1000})
    assert cli(tmp_path, "--budget", str(budget), "--source", str(corpus_dir)).exit_code == 0
    [out] = prepared_folders(tmp_path)
    data = PreparedData(out)
    record = data.manifest["heldout"]
    assert record["origin"] == "blocks" and record["num_rows"] == 20  # 20 blocks of 1 row
    train, held = {r.tobytes() for r in data.rows(0, len(data))}, {r.tobytes() for r in data.heldout_rows()}
    assert not train & held and len(data) == 200 - 20 - record["rows_beside_dropped"]
    # A validation-*.parquet beside the training files is the corpus's own split: used, not mixed into training.
    own = token_rows(30, 5)
    import pyarrow.parquet as pq

    from tests.test_data_corpus import _table
    pq.write_table(_table(own), corpus_dir / "data" / "validation-00000-of-00001.parquet")
    assert cli(tmp_path, "--budget", str(budget), "--source", str(corpus_dir), "--out", "own").exit_code == 0
    data = PreparedData(tmp_path / "own")
    assert data.manifest["heldout"]["origin"] == "validation" and len(data) == 200
    np.testing.assert_array_equal(data.heldout_rows(), own)
    np.testing.assert_array_equal(data.rows(0, 200), rows)


def test_fixed_protocol_masks_15_percent_of_non_special_tokens_80_10_10():
    rows = np.random.default_rng(0).integers(len(SPECIALS), VOCAB, size=(50, 40))
    rows[:, -1] = SEP_ID
    inputs, labels = fixed_masks(rows, SPECIAL, VOCAB)
    scored = labels >= 0
    assert (scored.sum(axis=1) == 6).all()  # round(0.15 × 39)
    assert not scored[:, -1].any()  # special tokens never scored
    assert (inputs[scored] == SPECIAL.mask).sum() == 50 * 5  # round(0.8 × 6) per row
    assert (inputs[~scored] == rows[~scored]).all()
    again = fixed_masks(rows, SPECIAL, VOCAB)
    assert np.array_equal(again[0], inputs) and np.array_equal(again[1], labels)


def _tiny_model(**options: object):
    from cramcli.model import CrammedBertConfig, CrammedBertForMaskedLM

    torch.manual_seed(0)
    config = CrammedBertConfig(num_layers=1, hidden_size=16, num_heads=2, intermediate_size=32, vocab_size=VOCAB,
                               max_seq_length=40, hidden_dropout=0.5, sparse_prediction="static", sparse_rate=0.01,
                               **options)
    return CrammedBertForMaskedLM(config)


@pytest.mark.parametrize("options", [{}, {"layout": "v2", "position_embedding": "rotary", "qk_norm": "rms",
                                          "tie_word_embeddings": False}], ids=["v1", "v2-modern"])
def test_evaluation_scores_every_masked_position_in_eval_mode_and_matches_a_dense_pass(options):
    rows = np.random.default_rng(1).integers(len(SPECIALS), VOCAB, size=(10, 40))
    model = _tiny_model(**options).train()
    result = HeldOutEval(rows, SPECIAL, VOCAB, torch.device("cpu"), batch_size=4).evaluate(model, None)
    assert model.training  # the mode is restored
    inputs, labels = fixed_masks(rows, SPECIAL, VOCAB)
    model.eval()
    with torch.no_grad():
        logits = model(torch.from_numpy(inputs)).logits  # dense: every position decoded, dropout off
    target = torch.from_numpy(labels)
    loss = torch.nn.functional.cross_entropy(logits.flatten(0, 1), target.flatten(), ignore_index=-100)
    keep = target >= 0
    accuracy = (logits.argmax(-1)[keep] == target[keep]).float().mean()
    assert abs(result["heldout_loss"] - loss.item()) < 1e-4
    assert abs(result["heldout_accuracy"] - accuracy.item()) < 1e-6


def test_ranks_score_disjoint_shares_that_add_up():
    rows = np.random.default_rng(2).integers(len(SPECIALS), VOCAB, size=(9, 40))
    parts = [HeldOutEval(rows, SPECIAL, VOCAB, torch.device("cpu"), batch_size=2, rank=r, world=3) for r in range(3)]
    whole = HeldOutEval(rows, SPECIAL, VOCAB, torch.device("cpu"), batch_size=2)
    assert sum(sum(len(b[2]) for b in p.batches) for p in parts) == whole.tokens


def test_paused_clock_does_not_charge_the_pause():
    now = [0.0]
    clock = ScheduleClock(100.0, now=lambda: now[0])
    clock.start()
    now[0] = 10.0
    with clock.paused():
        now[0] = 25.0
    now[0] = 30.0
    assert clock.elapsed() == 15.0


def test_pretrain_evaluates_periodically_and_at_the_end_off_the_clock(tmp_path):
    data = write_prepared(tmp_path / "data", heldout=24)
    train, arch = write_budgets(tmp_path, eval_every_minutes=0.0001, max_steps=400, schedule_clock="steps")
    out = tmp_path / "run"
    pretrain.run(Output(quiet=True), budget=str(train), arch=str(arch), data=data, out=out, device="cpu",
                 max_steps=40)
    report = json.loads((out / "report.json").read_text())
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    evals = [r for r in rows if "heldout_loss" in r]
    assert report["evaluations"] == len(evals) >= 2 and evals[-1]["step"] == 40
    assert report["heldout_loss"] == round(evals[-1]["heldout_loss"], 4) and report["heldout_rows"] == 24
    assert evals[-1]["heldout_loss"] < evals[0]["heldout_loss"]  # it learns, and the held-out curve shows it
    # Each stands for a multiple of eval_every_minutes (the same points in time for every run), at or after it.
    points = [r["due_s"] / 0.006 for r in evals[:-1]]
    assert all(abs(p - round(p)) < 1e-9 and p >= 1 for p in points) and points == sorted(set(points))
    assert all(r["elapsed_s"] >= r["due_s"] for r in evals)
    assert report["eval_seconds"] == round(sum(r["eval_s"] for r in evals), 2)
    assert report["final_loss"] is not None and report["eval_share_of_training"] > 0  # its cost is reported
    card_text = (out / "training.png").read_bytes()
    assert card_text[:4] == b"\x89PNG"


@pytest.fixture
def one_second_per_micro_step(monkeypatch):
    """The training clock ticks one second per micro-batch, whatever the machine's speed."""
    from cramcli.train import trainer as trainer_mod

    ticks = [0.0]
    monkeypatch.setattr(trainer_mod, "ScheduleClock", lambda *a, **k: ScheduleClock(*a, now=lambda: ticks[0], **k))
    original = trainer_mod.Trainer._micro_step

    def micro_step(self, **kwargs):
        ticks[0] += 1.0
        return original(self, **kwargs)

    monkeypatch.setattr(trainer_mod.Trainer, "_micro_step", micro_step)


def test_every_due_point_is_scored_even_inside_a_long_accumulation(tmp_path, one_second_per_micro_step):
    """One optimizer step of 8 micro-steps spans four evaluation points (one per 2 s): each is scored when it
    falls due, none is skipped, and the weights they score are the last optimizer step's."""
    data = write_prepared(tmp_path / "data", heldout=8)
    train, arch = write_budgets(tmp_path, batch_size=64, eval_every_minutes=2 / 60, schedule={"name": "constant"})
    out = tmp_path / "run"
    pretrain.run(Output(quiet=True), budget=str(train), arch=str(arch), data=data, out=out, device="cpu",
                 max_steps=24)
    evals = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines() if "heldout_loss" in line]
    assert [r["due_s"] for r in evals[:-1]] == [2.0 * k for k in range(1, 12)]  # every point, in order
    assert [r["step"] for r in evals[:-1]] == [2 * k for k in range(1, 12)]  # scored when due, mid-accumulation
    losses = [r["heldout_loss"] for r in evals]
    assert losses[0] == losses[1] == losses[2]  # steps 2, 4, 6 all score the initial weights (first update at 8)
    assert losses[3] != losses[2] and losses[3] == losses[4] == losses[5] == losses[6]


def test_the_time_budget_stops_between_micro_batches_and_drops_the_partial_batch(tmp_path, one_second_per_micro_step):
    """As in the original, time is up after the micro-batch that reaches the budget (11 s: 8 + 3 micro-batches of a
    batch of 8), not at the end of the accumulation; the exported weights are the one optimizer step's."""
    data = write_prepared(tmp_path / "data", heldout=8)
    train, arch = write_budgets(tmp_path, batch_size=64, hours=11 / 3600, schedule={"name": "constant"})
    out = tmp_path / "run"
    pretrain.run(Output(quiet=True), budget=str(train), arch=str(arch), data=data, out=out, device="cpu")
    report = json.loads((out / "report.json").read_text())
    assert report["stop_reason"].startswith("time budget")
    assert (report["micro_steps"], report["optimizer_steps"]) == (11, 1)
    trained = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines() if '"loss"' in line]
    assert [r["optimizer_step"] for r in trained] == [1]


def test_pretrain_without_a_heldout_split_reports_none(tmp_path):
    data = write_prepared(tmp_path / "data")
    train, arch = write_budgets(tmp_path, eval_every_minutes=0.001)
    out = tmp_path / "run"
    pretrain.run(Output(quiet=True), budget=str(train), arch=str(arch), data=data, out=out, device="cpu", max_steps=4)
    report = json.loads((out / "report.json").read_text())
    assert report["heldout_loss"] is None and report["evaluations"] == 0


def test_ddp_ranks_score_shares_that_add_up_to_the_single_process_score(tmp_path):
    data = write_prepared(tmp_path / "data", heldout=9)  # 5 + 4 rows: unequal shares
    common = {"schedule": {"name": "constant"}, "batch_size": 16, "masking": {"scheme": "exact", "rate": 0.25}}
    train, arch = write_budgets(tmp_path, micro_batch_size=8, **common)
    pretrain.run(Output(quiet=True), budget=str(train), arch=str(arch), data=data, out=tmp_path / "single",
                 device="cpu", max_steps=6)
    train, arch = write_budgets(tmp_path, micro_batch_size=4, **common)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m", "cramcli",
           "pretrain", "--budget", str(train), "--arch", str(arch), "--data", str(data), "--out",
           str(tmp_path / "ddp"), "--device", "cpu", "--max-steps", "12", "--quiet"]  # 12 of 4 rows = 6 of 8
    done = subprocess.run(cmd, cwd=Path(__file__).resolve().parents[1], env={**os.environ, "OMP_NUM_THREADS": "1"},
                          capture_output=True, timeout=180)
    assert done.returncode == 0, done.stderr.decode()[-2000:]
    single, ddp = (json.loads((tmp_path / run / "report.json").read_text()) for run in ("single", "ddp"))
    assert ddp["heldout_tokens_scored"] == single["heldout_tokens_scored"]
    assert ddp["heldout_loss"] == pytest.approx(single["heldout_loss"], abs=2e-4)
    assert ddp["heldout_accuracy"] == pytest.approx(single["heldout_accuracy"], abs=1e-6)


def test_saved_dataset_dict_brings_its_own_validation_split(tmp_path):
    import datasets

    from tests.test_data_corpus import write_tokenizer

    rows, own = token_rows(40, 1), token_rows(12, 2)
    root = tmp_path / "corpus"
    datasets.DatasetDict({"train": datasets.Dataset.from_dict({"input_ids": rows.tolist()}),
                          "validation": datasets.Dataset.from_dict({"input_ids": own.tolist()})}).save_to_disk(str(root))
    write_tokenizer(root / "tokenizer")
    budget = data_budget(tmp_path / "b.json", validation={"share": 0.01, "max_rows": 10})
    result = cli(tmp_path, "--budget", str(budget), "--source", str(root))
    assert result.exit_code == 0, result.output
    [out] = prepared_folders(tmp_path)
    data = PreparedData(out)
    assert data.manifest["heldout"]["origin"] == "validation"
    np.testing.assert_array_equal(data.rows(0, len(data)), rows)  # every training row kept, none held out
    np.testing.assert_array_equal(data.heldout_rows(), own[:10])  # capped at max_rows


def test_resume_keeps_the_evaluations_and_their_time(tmp_path):
    data = write_prepared(tmp_path / "data", heldout=16)
    train, arch = write_budgets(tmp_path, max_steps=400, schedule_clock="steps")
    out = tmp_path / "run"
    pretrain.run(Output(quiet=True), budget=str(train), arch=str(arch), data=data, out=out, device="cpu", max_steps=8)
    assert json.loads((out / "report.json").read_text())["evaluations"] == 1
    pretrain.run(Output(quiet=True), budget=str(train), arch=str(arch), data=data, out=out, device="cpu",
                 max_steps=16, resume=True)
    second = json.loads((out / "report.json").read_text())
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    evals = [r for r in rows if "heldout_loss" in r]
    assert [r["step"] for r in evals] == [8, 16] and second["evaluations"] == 2
    # The training state carries the first session's evaluation time over: both sessions' evaluations add up.
    last = sorted((out / "checkpoints").glob("step_*"))[-1]
    state = torch.load(last / "state.pt", weights_only=False)
    assert state["progress"]["eval_seconds"] == pytest.approx(sum(r["eval_s"] for r in evals), rel=1e-9)
