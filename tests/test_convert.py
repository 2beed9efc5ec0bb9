"""`cram convert-attention`: round trips, import of original checkpoints, and every bad input through the CLI."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file
from typer.testing import CliRunner

from cramcli.budgets import ArchBudget
from cramcli.cli import app
from cramcli.model import CrammedBertConfig, CrammedBertForMaskedLM
from cramcli.model.checkpoint import load_pretrained, save_checkpoint
from cramcli.model.convert import qkv_interleaved_to_blocks

FIXTURES = Path(__file__).resolve().parents[2] / "shared" / "fixtures" / "cramming"


@pytest.fixture
def model_ckpt(tmp_path: Path) -> Path:
    torch.manual_seed(0)
    arch = ArchBudget(num_layers=2, hidden_size=32, num_heads=4, intermediate_size=64, vocab_size=80,
                      max_seq_length=16)
    path = tmp_path / "src"
    save_checkpoint(CrammedBertForMaskedLM(CrammedBertConfig.from_arch(arch)), path)
    return path


def _convert(*args: str) -> object:
    return CliRunner().invoke(app, ["convert", *args])


def test_pytorch_to_flash_to_pytorch_is_bit_identical(model_ckpt: Path, tmp_path: Path) -> None:
    res = _convert("--attention", "flash", str(model_ckpt), "-o", str(tmp_path / "flash"), "--json")
    assert res.exit_code == 0, res.output
    assert json.loads((tmp_path / "flash" / "config.json").read_text())["attention"] == "flash"
    res = _convert(str(tmp_path / "flash"), "-o", str(tmp_path / "back"))
    assert res.exit_code == 0, res.output
    before, after = load_file(str(model_ckpt / "model.safetensors")), load_file(str(tmp_path / "back" / "model.safetensors"))
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)
    report = json.loads((tmp_path / "back" / "report.json").read_text())
    assert report["weights_bit_identical"] and report["parity"]["max_abs_delta_logits"] < 1e-5


def test_existing_output_is_kept_without_force_and_a_foreign_one_always(model_ckpt: Path, tmp_path: Path) -> None:
    assert _convert(str(model_ckpt), "-o", str(tmp_path / "out")).exit_code == 0
    res = _convert(str(model_ckpt), "-o", str(tmp_path / "out"))
    assert res.exit_code == 2 and "--force" in res.output
    assert _convert(str(model_ckpt), "-o", str(tmp_path / "out"), "--force").exit_code == 0
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "keep").write_text("x")
    res = _convert(str(model_ckpt), "-o", str(tmp_path / "mine"), "--force")
    assert res.exit_code == 2 and "did not create" in res.output
    assert [p.name for p in (tmp_path / "mine").iterdir()] == ["keep"]


def test_qkv_layout_moves_every_heads_rows() -> None:
    """v2's per-head [q_h | k_h | v_h] rows land in cram's [Q | K | V] blocks, head by head (4 heads of 2 rows)."""
    heads, size = 4, 2
    w = torch.arange(3 * heads * size * 5, dtype=torch.float32).view(3 * heads * size, 5)
    blocks = qkv_interleaved_to_blocks(w, num_heads=heads)
    for h in range(heads):
        for part in range(3):  # q, k, v
            src = w[(3 * h + part) * size:(3 * h + part + 1) * size]
            dst = blocks[part * heads * size + h * size:part * heads * size + (h + 1) * size]
            assert torch.equal(dst, src), (h, part)
    assert torch.equal(blocks[2:4], w[6:8])  # head 1's query rows (interleaved rows 6-7): rows 2-3 of the Q block


@pytest.mark.parametrize("variant", ["v1-legacy-tiny", "v2-tiny"])
def test_original_checkpoints_import_through_the_cli(variant: str, tmp_path: Path) -> None:
    if not (FIXTURES / variant).is_dir():
        pytest.skip("../shared/fixtures/cramming is not available")
    res = _convert(str(FIXTURES / variant), "-o", str(tmp_path / "out"))
    assert res.exit_code == 0, res.output
    ref = load_file(str(FIXTURES / variant / "reference.safetensors"))
    with torch.no_grad():
        logits = load_pretrained(tmp_path / "out")(ref["input_ids"]).logits
    assert (logits - ref["mlm_logits"]).abs().max() <= 1e-5
    assert json.loads((tmp_path / "out" / "report.json").read_text())["source_format"] == f"cramming-{variant[:2]}"


def _broken(kind: str, src: Path, tmp_path: Path) -> Path:
    bad = tmp_path / "bad"
    shutil.copytree(src, bad)
    weights = bad / "model.safetensors"
    if kind == "no config":
        (bad / "config.json").unlink()
    elif kind == "unknown type":
        (bad / "config.json").write_text(json.dumps({"model_type": "bert"}))
    elif kind == "no weights":
        weights.unlink()
    elif kind == "truncated":
        weights.write_bytes(weights.read_bytes()[:1000])
    elif kind in ("shape", "nan"):
        state = load_file(str(weights))
        name = "encoder.layers.0.attn.qkv.weight"
        state[name] = state[name][:-1] if kind == "shape" else state[name].fill_(float("nan"))
        save_file(state, str(weights))
    return bad


@pytest.mark.parametrize(("kind", "message"), [
    ("no config", "not a checkpoint folder"), ("unknown type", "unknown model_type"),
    ("no weights", "weight file missing"), ("truncated", "truncated or corrupt"),
    ("shape", "has shape"), ("nan", "NaN"),
])
def test_bad_checkpoints_fail_in_one_line_and_write_nothing(kind: str, message: str, model_ckpt: Path,
                                                            tmp_path: Path) -> None:
    res = _convert(str(_broken(kind, model_ckpt, tmp_path)), "-o", str(tmp_path / "out"))
    assert res.exit_code == 2 and message in res.output, res.output
    assert "Traceback" not in res.output and len(res.output.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()


def test_unsupported_target_and_flash_without_cuda_are_refused(model_ckpt: Path, tmp_path: Path) -> None:
    res = _convert("--attention", "triton", str(model_ckpt), "-o", str(tmp_path / "out"))
    assert res.exit_code == 2
    if not torch.cuda.is_available():
        res = _convert("--attention", "flash", "--device", "cuda", str(model_ckpt), "-o", str(tmp_path / "out"))
        assert res.exit_code == 2 and "CUDA" in res.output
    assert not (tmp_path / "out").exists()


def test_flash_parity_on_a_cpu_says_flash_was_not_checked(model_ckpt: Path, tmp_path: Path) -> None:
    from cramcli.model.attention import flash_available

    if torch.cuda.is_available() and flash_available():
        pytest.skip("the flash kernel runs here")
    res = CliRunner().invoke(app, ["convert", "--attention", "flash", str(model_ckpt), "-o", str(tmp_path / "flash")],
                             env={"COLUMNS": "300"})
    assert res.exit_code == 0, res.output
    assert "flash not checked (no CUDA/flash-attn)" in res.output
    parity = json.loads((tmp_path / "flash" / "report.json").read_text())["parity"]
    assert parity["flash_kernel"] == "flash not checked (no CUDA/flash-attn)"
    assert parity["converted_backend"] == "reference"  # what was compared instead: the same maths
    res = _convert(str(model_ckpt), "-o", str(tmp_path / "plain"))  # no flash side: nothing to disclaim
    assert res.exit_code == 0 and "flash not checked" not in res.output
    assert json.loads((tmp_path / "plain" / "report.json").read_text())["parity"]["flash_kernel"] is None
