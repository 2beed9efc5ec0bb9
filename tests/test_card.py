"""`cram card` and `cram push` on a tiny pretrained model with a tiny `cram glue` result (CPU, seconds).

The card's front matter parses as YAML, its GLUE row is the medians of results.json, the budget files beside
the weights validate, its How-to-use runs; edited cards are kept; push fails cleanly offline (no real network)."""

from __future__ import annotations

import errno
import json
import re
import shutil
import socket
import sys
from pathlib import Path

import pytest
import torch
import yaml
from PIL import Image
from typer.testing import CliRunner

from cramcli import budgets
from cramcli.cli import app
from cramcli.publish import card as render
from cramcli.stages import pretrain
from cramcli.utils.console import Output

sys.path.insert(0, str(Path(__file__).parent))
from pretrain_helpers import write_budgets, write_prepared  # noqa: E402

runner = CliRunner()
HEADER = "| Task | MNLI-(m/mm) | QQP | QNLI | SST-2 | CoLA | STS-B | MRPC | RTE | Average |"


def _glue_tasks(root: Path, n_train: int = 24, n_dev: int = 8) -> Path:
    """RTE and STS-B in the original GLUE layouts, sentences of the tiny corpus's words."""
    g = torch.Generator().manual_seed(0)

    def sent() -> str:
        return " ".join(f"w{int(i)}" for i in torch.randint(7, 64, (6,), generator=g))

    (root / "RTE").mkdir(parents=True)
    (root / "STS-B").mkdir()
    for split, n in (("train", n_train), ("dev", n_dev)):
        rows = [f"{i}\t{sent()}\t{sent()}\t{'entailment' if i % 2 else 'not_entailment'}" for i in range(n)]
        (root / "RTE" / f"{split}.tsv").write_text("index\tsentence1\tsentence2\tlabel\n" + "\n".join(rows) + "\n")
        rows = [f"{i}\tg\tf\ty\t{i:04d}\tnone\tnone\t{sent()}\t{sent()}\t{(i % 6) * 0.8:.3f}" for i in range(n)]
        head = "index\tgenre\tfilename\tyear\told_index\tsource1\tsource2\tsentence1\tsentence2\tscore\n"
        (root / "STS-B" / f"{split}.tsv").write_text(head + "\n".join(rows) + "\n")
    return root


@pytest.fixture(scope="module")
def made(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny run (20 micro-steps) with `cram glue` results (rte, stsb × 2 trials) and its card."""
    tmp = tmp_path_factory.mktemp("card")
    data = write_prepared(tmp / "data", heldout=8)
    manifest = json.loads((data / "manifest.json").read_text())
    manifest["source"] = {"spec": "hf:allenai/c4:en"}
    manifest["budget"] = budgets.DataBudget(seq_length=32).model_dump(mode="json")
    (data / "manifest.json").write_text(json.dumps(manifest))
    train, arch = write_budgets(tmp)
    train, arch = train.rename(tmp / "train_budget_tiny.json"), arch.rename(tmp / "arch_budget_tiny.json")
    pretrain.run(Output(quiet=True), budget=str(train), arch=str(arch), data=data, out=tmp / "run", device="cpu",
                 max_steps=20)
    res = runner.invoke(app, ["glue", "--model", str(tmp / "run"), "--glue-dir", str(_glue_tasks(tmp / "glue_data")),
                              "--tasks", "rte,stsb", "--trials", "2", "--epochs", "1", "--budget", "demo",
                              "--device", "cpu", "--quiet"])
    assert res.exit_code == 0, res.output
    res = runner.invoke(app, ["card", str(tmp / "run")])
    assert res.exit_code == 0, res.output
    return tmp


def _front_matter(text: str) -> dict:
    assert text.startswith("---\n")
    return yaml.safe_load(text.split("---\n", 2)[1])


def test_front_matter_and_table(made: Path) -> None:
    final = made / "run" / "final"
    text = (final / "README.md").read_text()
    meta = _front_matter(text)
    assert meta["license"] == "openrail" and meta["language"] == ["en"] and meta["datasets"] == ["allenai/c4"]
    assert meta["metrics"] == ["glue"] and meta["pipeline_tag"] == "fill-mask"
    assert {"cramming", "bert", "NLU"} <= set(meta["tags"])

    results = json.loads((made / "run" / "glue" / "results.json").read_text())
    medians = {c: v for t in results["tasks"].values() for c, v in t["median"].items()}
    lines = text.splitlines()
    row = lines[lines.index(HEADER) + 2].strip("|").split("|")
    cells = [c.strip() for c in row]
    assert cells[0] == "crammed-bert-tiny"
    dash = "—"
    assert cells[1:8] == [dash, dash, dash, dash, dash, f"{medians['STS-B']:.1f}", dash]
    assert cells[8] == f"{medians['RTE']:.1f}"
    assert cells[9] == f"{(medians['STS-B'] + medians['RTE']) / 2:.1f} (partial: 2 of 9)"
    assert results["protocol"] == "sane" and "median over 2 trial(s)" in text and "GLUE-sane protocol" in text
    # Facts from the run: tokens seen, budget, the paper.
    report = json.loads((made / "run" / "report.json").read_text())
    assert f"{report['tokens']:,}" in text and "arXiv:2212.14034" in text and "eprint        = {2212.14034}" in text
    assert f"{report['final_loss']:.3f} at the last logged step" in text
    assert f"| held-out MLM loss | {report['heldout_loss']:.3f} (accuracy {report['heldout_accuracy']:.1%}) on 8 " \
           "held-out rows" in text
    # The summary for people is rounded; the raw medians stay in tasks.
    assert results["summary"]["columns"]["RTE"] == round(medians["RTE"], 2)


def test_budget_files_beside_the_weights_validate(made: Path) -> None:
    final = made / "run" / "final"
    files = [final / f"{kind}_budget_tiny.json" for kind in ("data", "arch", "train")]
    assert all(f.is_file() for f in files)
    res = runner.invoke(app, ["budgets", "validate", *map(str, files)])
    assert res.exit_code == 0, res.output
    assert json.loads(files[2].read_text()) == json.loads((made / "run" / "run-config.json").read_text())["train"]
    assert budgets.load("train", files[2]).max_steps == 20


def test_pngs_are_valid_images(made: Path) -> None:
    for path in (made / "run" / "training.png", made / "run" / "glue" / "glue.png",
                 made / "run" / "final" / "training.png", made / "run" / "final" / "glue.png"):
        with Image.open(path) as image:
            image.verify()
            assert image.format == "PNG" and image.size[0] > 300 and image.size[1] > 300, path
    text = (made / "run" / "final" / "README.md").read_text()
    assert "](training.png)" in text and "](glue.png)" in text


def test_how_to_use_runs(made: Path) -> None:
    final = made / "run" / "final"
    code = re.search(r"```python\n(.*?)```", (final / "README.md").read_text(), re.S).group(1)
    assert f"from_pretrained({str(final)!r})" in code
    scope: dict = {}
    exec(compile(code, "README.md", "exec"), scope)  # the snippet as published, on the tiny checkpoint
    assert scope["logits"].shape[-1] == 64


def test_regenerating_is_identical_and_edits_are_kept(made: Path) -> None:
    readme = made / "run" / "final" / "README.md"
    first = readme.read_bytes()
    assert runner.invoke(app, ["card", str(made / "run")]).exit_code == 0
    assert readme.read_bytes() == first
    readme.write_text(first.decode().replace("## How to use", "## How to use\n\nMy own words."))
    res = runner.invoke(app, ["card", str(made / "run")])
    assert res.exit_code == 2 and "edited by hand" in res.output and "--force" in res.output
    assert "My own words." in readme.read_text()
    budget = made / "run" / "final" / "train_budget_tiny.json"
    assert runner.invoke(app, ["card", str(made / "run"), "--force"]).exit_code == 0
    assert readme.read_bytes() == first
    budget.write_text(budget.read_text().replace('"hours": 1.0', '"hours": 2.0'))
    res = runner.invoke(app, ["card", str(made / "run")])
    assert res.exit_code == 2 and "train_budget_tiny.json" in res.output and '"hours": 2.0' in budget.read_text()
    assert runner.invoke(app, ["card", str(made / "run"), "--force"]).exit_code == 0


def test_refuses_glue_results_of_another_checkpoint(made: Path, tmp_path: Path) -> None:
    results = json.loads((made / "run" / "glue" / "results.json").read_text())
    other = tmp_path / "other.json"
    other.write_text(json.dumps({**results, "checkpoint": "somewhere/else/final", "weights_sha256": "0" * 64}))
    res = runner.invoke(app, ["card", str(made / "run"), "--glue", str(other)])
    assert res.exit_code == 2 and "somewhere/else/final" in res.output and str(made / "run" / "final") in res.output
    old = {k: v for k, v in results.items() if k not in ("weights_sha256", "checkpoint_path")}
    other.write_text(json.dumps({**old, "checkpoint": str(tmp_path)}))  # results written before the digest existed
    res = runner.invoke(app, ["card", str(made / "run"), "--glue", str(other)])
    assert res.exit_code == 2 and "not of" in res.output
    res = runner.invoke(app, ["card", str(made / "run"), "--glue", str(tmp_path / "missing.json")])
    assert res.exit_code == 2 and "no GLUE results.json" in res.output


def test_not_a_checkpoint(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("hello")
    res = runner.invoke(app, ["card", str(tmp_path)])
    assert res.exit_code == 2 and "not a checkpoint folder (no config.json" in res.output and "Traceback" not in res.output
    assert not (tmp_path / "README.md").exists()


def test_flash_checkpoint_card_has_the_convert_line(made: Path, tmp_path: Path) -> None:
    from cramcli.stages import convert_attention

    flash = tmp_path / "flash"
    convert_attention.run(Output(quiet=True), checkpoint=made / "run" / "final", out=flash, attention="flash",
                          device="cpu", gpu=None, force=False)
    res = runner.invoke(app, ["card", str(flash), "--glue", str(made / "run" / "glue")])
    assert res.exit_code == 0, res.output
    text = (flash / "README.md").read_text()
    assert f"cram convert {flash} --attention pytorch" in text
    assert "train_budget_tiny.json" in text  # found its run through convert's report.json (same weights)


def test_marker_detects_any_edit() -> None:
    text = render.with_marker("# card\n", {"files": {}})
    assert render.read_marker(text) is not None
    assert render.read_marker(text.replace("# card", "# Card")) is None
    assert render.read_marker("# card\n") is None


# ----------------------------------------------------------------------------------------------------------
# push (no real network: a closed local port, or the hub client's methods patched)


@pytest.fixture
def bare_checkpoint(made: Path, tmp_path: Path) -> Path:
    folder = tmp_path / "ck"
    shutil.copytree(made / "run" / "final", folder)
    (folder / "README.md").unlink()
    return folder


@pytest.fixture
def closed_endpoint(monkeypatch: pytest.MonkeyPatch) -> str:
    from huggingface_hub import constants

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    endpoint = f"http://127.0.0.1:{port}"
    monkeypatch.setattr(constants, "ENDPOINT", endpoint)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setenv("HF_TOKEN", "hf_not_a_real_token")
    return endpoint


@pytest.mark.parametrize("repo_id", ["no-slash", "a/b/c", "alice/-bad", "alice/bad--name", "al ice/x"])
def test_push_invalid_repo_id(bare_checkpoint: Path, repo_id: str) -> None:
    res = runner.invoke(app, ["push", str(bare_checkpoint), "--repo-id", repo_id])
    assert res.exit_code == 2 and "not a hub repo id" in res.output and len(res.output.strip().splitlines()) == 1


def test_push_without_token(bare_checkpoint: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from huggingface_hub import constants

    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.delenv("HUGGING_FACE_HUB_TOKEN", raising=False)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "HF_TOKEN_PATH", str(tmp_path / "no-token"))
    monkeypatch.setattr(constants, "HF_STORED_TOKENS_PATH", str(tmp_path / "no-tokens"))
    res = runner.invoke(app, ["push", str(bare_checkpoint), "--repo-id", "alice/tiny"])
    assert res.exit_code == 2 and "HF_TOKEN" in res.output and "hf auth login" in res.output
    assert "Traceback" not in res.output and not (bare_checkpoint / "README.md").exists()


def test_push_offline_and_unreachable(bare_checkpoint: Path, closed_endpoint: str,
                                      monkeypatch: pytest.MonkeyPatch) -> None:
    from huggingface_hub import constants

    res = runner.invoke(app, ["push", str(bare_checkpoint), "--repo-id", "alice/tiny"])
    assert res.exit_code == 2 and "cannot reach the hub" in res.output and closed_endpoint in res.output
    assert "Traceback" not in res.output and len(res.output.strip().splitlines()) == 1
    assert (bare_checkpoint / "README.md").is_file()  # the card is written before any upload
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    res = runner.invoke(app, ["push", str(bare_checkpoint), "--repo-id", "alice/tiny"])
    assert res.exit_code == 2 and "HF_HUB_OFFLINE" in res.output


def test_push_upload_call(bare_checkpoint: Path, closed_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> None:
    from huggingface_hub import HfApi

    try:  # the connection error this huggingface_hub really raises, whatever its HTTP library
        HfApi(endpoint=closed_endpoint).model_info("alice/tiny", token=False)
    except Exception as exc:  # noqa: BLE001
        real_error = exc
    calls: dict = {}

    def create_repo(self, repo_id, **kw):
        calls["create_repo"] = {"repo_id": repo_id, **kw}
        return f"{closed_endpoint}/{repo_id}"

    def create_branch(self, repo_id, **kw):
        calls["create_branch"] = {"repo_id": repo_id, **kw}

    def upload_folder(self, **kw):
        calls["upload_folder"] = kw
        raise real_error

    monkeypatch.setattr(HfApi, "create_repo", create_repo)
    monkeypatch.setattr(HfApi, "create_branch", create_branch)
    monkeypatch.setattr(HfApi, "upload_folder", upload_folder)
    args = ["push", str(bare_checkpoint), "--repo-id", "alice/tiny", "--private", "--revision", "v1"]
    res = runner.invoke(app, args)
    assert res.exit_code == 2 and "cannot reach the hub" in res.output and "Traceback" not in res.output
    assert calls["create_repo"]["private"] is True and calls["create_branch"]["branch"] == "v1"
    up = calls["upload_folder"]
    assert Path(up["folder_path"]) == bare_checkpoint and up["revision"] == "v1" and up["repo_id"] == "alice/tiny"
    # The card was written for the repo: its How-to-use loads from the hub id.
    assert "from_pretrained('alice/tiny')" in (bare_checkpoint / "README.md").read_text()

    # A local file that cannot be read is said as such, not as an unreachable hub.
    def unreadable(self, **kw):
        raise PermissionError(errno.EACCES, "Permission denied", str(bare_checkpoint / "model.safetensors"))

    monkeypatch.setattr(HfApi, "upload_folder", unreadable)
    res = runner.invoke(app, args)
    assert res.exit_code == 1 and "cannot reach" not in res.output and "Traceback" not in res.output
    assert "model.safetensors: Permission denied — a local file problem, not the hub" in res.output.replace("\n", "")

    monkeypatch.setattr(HfApi, "upload_folder", lambda self, **kw: type("C", (), {"commit_url": "u/commit/1"})())
    res = runner.invoke(app, [*args, "--json"])
    assert res.exit_code == 0, res.output
    report = json.loads(res.stdout)
    assert report["commit"] == "u/commit/1" and report["card"] == "kept (cram's, for this repo)"


def test_model_row_names_the_modern_arch_options_and_nothing_for_the_recipe() -> None:
    assert render._modern_options({"position_embedding": "scaled-sinusoidal", "qk_norm": "none"}) == ""
    text = render._modern_options({"position_embedding": "rotary", "qk_norm": "rms", "activation": "relu2",
                                   "zero_init_residual": True})
    assert text == "; positions `rotary`, QK-norm `rms`, activation `relu2`, zero-initialised output projections"


def test_the_card_of_the_tiny_run_says_its_decoder_is_tied(made: Path) -> None:
    text = (made / "run" / "final" / "README.md").read_text()
    assert "the decoder is tied to the embedding" in text and "gated FFN" in text
