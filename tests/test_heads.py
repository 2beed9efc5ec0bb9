"""Token classification, question answering and multiple choice (cramcli/model/heads.py): the transformers
conventions, save/load, bf16, a few `Trainer` steps on synthetic tasks made here, the Auto classes and pipelines
on a cram checkpoint with cram's own tokenizer, and `cram convert` keeping each head's outputs."""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from typer.testing import CliRunner

from cramcli.budgets import ArchBudget, ClassifierBudget, NormalizationBudget, TokenizerBudget
from cramcli.cli import app
from cramcli.data.tokenizer import CRAM_SPECIAL_IDS, save_tokenizer, train_tokenizer
from cramcli.model import (
    CrammedBertConfig,
    CrammedBertForMaskedLM,
    CrammedBertForMultipleChoice,
    CrammedBertForQuestionAnswering,
    CrammedBertForTokenClassification,
)
from cramcli.model.checkpoint import load_pretrained, save_checkpoint

FILLER = ["the", "a", "river", "garden", "winter", "market", "village", "station", "walked", "to", "near", "old", "green", "saw"]
NAMES = ["alice", "bob", "carol", "dave"]
QUESTION = "who walked ?"
LABELS = {0: "O", 1: "B-NAME", 2: "I-NAME"}
SEQ = 32
HEADS = {"token": CrammedBertForTokenClassification, "qa": CrammedBertForQuestionAnswering,
         "choice": CrammedBertForMultipleChoice}


def sentence(rng: random.Random, name: bool = True) -> tuple[str, int | None]:
    """Eight filler words with one name at a random place: (text, the name's word index)."""
    words = [rng.choice(FILLER) for _ in range(8)]
    at = rng.randrange(len(words) + 1) if name else None
    if at is not None:
        words.insert(at, rng.choice(NAMES))
    return " ".join(words), at


@pytest.fixture(scope="module")
def tok_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """cram's own tokenizer (train_tokenizer + save_tokenizer), small enough that names split into word pieces."""
    rng = random.Random(1)
    texts = [sentence(rng)[0] + " ." for _ in range(200)] + [QUESTION] * 20
    folder = tmp_path_factory.mktemp("tok")
    save_tokenizer(train_tokenizer(texts, TokenizerBudget(vocab_size=90), NormalizationBudget(), vocab_size=90),
                   folder, model_max_length=SEQ)
    return folder


@pytest.fixture(scope="module")
def tok(tok_dir: Path) -> Any:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tok_dir)


def config(**overrides: Any) -> CrammedBertConfig:
    arch = ArchBudget(layout="v2", num_layers=2, hidden_size=32, num_heads=4, intermediate_size=64, vocab_size=90,
                      max_seq_length=SEQ, classifier=ClassifierBudget(head_dim=32))
    return CrammedBertConfig.from_arch(arch, **CRAM_SPECIAL_IDS.config_fields(), **overrides)


def build(head: str, seed: int = 0, **overrides: Any) -> torch.nn.Module:
    torch.manual_seed(seed)
    if head == "token":
        overrides = {"id2label": LABELS, "label2id": {v: k for k, v in LABELS.items()}, **overrides}
    return HEADS[head](config(**overrides)).eval()


# ----------------------------------------------------------------------------------------------------------
# the synthetic tasks: find the name


def token_example(tok: Any, rng: random.Random) -> dict[str, torch.Tensor]:
    """Tag the name's word pieces B-NAME, I-NAME; every other word O; special tokens and padding −100."""
    text, at = sentence(rng)
    enc = tok(text, padding="max_length", max_length=SEQ, return_token_type_ids=False)
    labels, previous = [], None
    for word in enc.word_ids():
        labels.append(-100 if word is None else 0 if word != at else 1 if previous != at else 2)
        previous = word
    return {"input_ids": torch.tensor(enc["input_ids"]), "attention_mask": torch.tensor(enc["attention_mask"]),
            "labels": torch.tensor(labels)}


def qa_example(tok: Any, rng: random.Random) -> dict[str, torch.Tensor]:
    """Question "who walked ?", the sentence as context; the answer span is the name's word pieces."""
    text, at = sentence(rng)
    enc = tok(QUESTION, text, padding="max_length", max_length=SEQ, return_token_type_ids=False)
    span = [i for i, (s, w) in enumerate(zip(enc.sequence_ids(), enc.word_ids(), strict=True)) if s == 1 and w == at]
    return {"input_ids": torch.tensor(enc["input_ids"]), "attention_mask": torch.tensor(enc["attention_mask"]),
            "start_positions": torch.tensor(span[0]), "end_positions": torch.tensor(span[-1])}


def choice_example(tok: Any, rng: random.Random) -> dict[str, torch.Tensor]:
    """Two sentences after the question; the right choice is the one with a name in it."""
    right = rng.randrange(2)
    texts = [sentence(rng, name=i == right)[0] for i in range(2)]
    enc = tok([QUESTION] * 2, texts, padding="max_length", max_length=SEQ, return_token_type_ids=False,
              return_tensors="pt")
    return {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"], "labels": torch.tensor(right)}


EXAMPLES: dict[str, Callable[[Any, random.Random], dict[str, torch.Tensor]]] = {
    "token": token_example, "qa": qa_example, "choice": choice_example}


def dataset(head: str, tok: Any, n: int, seed: int) -> list[dict[str, torch.Tensor]]:
    rng = random.Random(seed)
    return [EXAMPLES[head](tok, rng) for _ in range(n)]


def collate(rows: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    return {k: torch.stack([r[k] for r in rows]) for k in rows[0]}


# ----------------------------------------------------------------------------------------------------------
# shapes and losses


def test_outputs_follow_the_transformers_conventions(tok: Any) -> None:
    batch = collate(dataset("token", tok, 3, seed=0))
    out = build("token")(**batch)
    assert out.logits.shape == (3, SEQ, 3)
    keep = batch["labels"] != -100
    assert 0 < int(keep.sum()) < keep.numel()  # specials and padding are ignored
    assert torch.allclose(out.loss, F.cross_entropy(out.logits[keep], batch["labels"][keep]))

    batch = collate(dataset("qa", tok, 3, seed=0))
    model = build("qa")
    out = model(**batch)
    assert out.start_logits.shape == out.end_logits.shape == (3, SEQ) and not hasattr(out, "logits")
    expected = (F.cross_entropy(out.start_logits, batch["start_positions"])
                + F.cross_entropy(out.end_logits, batch["end_positions"])) / 2
    assert torch.allclose(out.loss, expected)
    # A start beyond the input (its answer truncated away) takes no loss: BERT's clamp-and-ignore.
    far = batch["start_positions"].clone()
    far[0] = SEQ + 7
    out_far = model(**{**batch, "start_positions": far})
    expected = (F.cross_entropy(out.start_logits[1:], far[1:])
                + F.cross_entropy(out.end_logits, batch["end_positions"])) / 2
    assert torch.allclose(out_far.loss, expected)
    assert model(batch["input_ids"], batch["attention_mask"]).loss is None

    batch = collate(dataset("choice", tok, 3, seed=0))
    assert batch["input_ids"].shape == (3, 2, SEQ)
    model = build("choice")
    out = model(**batch)
    assert out.logits.shape == (3, 2) and torch.allclose(out.loss, F.cross_entropy(out.logits, batch["labels"]))
    # Each choice is scored on its own: the same as running it alone through the flattened batch.
    alone = model(batch["input_ids"][:, 1:], batch["attention_mask"][:, 1:]).logits
    assert torch.allclose(alone[:, 0], out.logits[:, 1], atol=1e-6)
    with pytest.raises(ValueError, match=r"\[batch, choices, seq\]"):
        model(batch["input_ids"][:, 0])


def test_the_arch_budget_picks_dropout_and_pooling() -> None:
    arch = ArchBudget(layout="v2", num_layers=1, hidden_size=32, num_heads=4, intermediate_size=64, vocab_size=90,
                      max_seq_length=SEQ, classifier=ClassifierBudget(pooler="avg", head_dim=24, dropout=0.3))
    token, qa, choice = (HEADS[h](CrammedBertConfig.from_arch(arch)) for h in ("token", "qa", "choice"))
    assert token.dropout.p == qa.dropout.p == choice.pooler.dropout.p == 0.3
    assert choice.pooler.mode == "avg" and choice.classifier.in_features == 24  # classifier.head_dim
    choice.eval()
    # avg pooling ignores padded positions: changing a padded token changes nothing.
    ids = torch.randint(7, 90, (1, 2, 10))
    mask = torch.ones_like(ids)
    mask[..., 6:] = 0
    other = ids.clone()
    other[..., 8] = 9
    with torch.no_grad():
        assert torch.allclose(choice(ids, mask).logits, choice(other, mask).logits, atol=1e-6)


@pytest.mark.parametrize("head", list(HEADS))
@pytest.mark.parametrize("attention", ["pytorch", "reference"])
def test_bf16_forward_tracks_fp32_and_the_loss_stays_fp32(head: str, attention: str, tok: Any) -> None:
    batch = collate(dataset(head, tok, 4, seed=1))
    model = build(head, attention=attention)
    with torch.no_grad():
        full = model(**batch)
        half = model.to(torch.bfloat16)(**batch)
    names = ("start_logits", "end_logits") if head == "qa" else ("logits",)
    for name in names:
        assert getattr(half, name).dtype == torch.bfloat16
        assert (getattr(half, name).float() - getattr(full, name)).abs().max() < 0.1
    assert half.loss.dtype == torch.float32 and abs(float(half.loss) - float(full.loss)) < 0.05


# ----------------------------------------------------------------------------------------------------------
# saving and loading


def _outputs(model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> list[torch.Tensor]:
    with torch.no_grad():
        out = model(**batch)
    return [out[k] for k in ("loss", "logits", "start_logits", "end_logits") if k in out]


MODERN = {"position_embedding": "rotary", "qk_norm": "rms", "activation": "relu2", "glu": False}
"""The arch budget's modern options (docs/recipes.md): the heads sit on whatever encoder the config builds."""


@pytest.mark.parametrize("head", list(HEADS))
@pytest.mark.parametrize("options", [{}, MODERN], ids=["recipe", "modern"])
def test_save_pretrained_round_trip_through_the_auto_class(head: str, options: dict[str, Any], tok: Any,
                                                           tmp_path: Path) -> None:
    from transformers import AutoModelForMultipleChoice, AutoModelForQuestionAnswering, AutoModelForTokenClassification

    auto = {"token": AutoModelForTokenClassification, "qa": AutoModelForQuestionAnswering,
            "choice": AutoModelForMultipleChoice}[head]
    model = build(head, seed=3, **options)
    model.save_pretrained(tmp_path / "m")
    assert json.loads((tmp_path / "m" / "config.json").read_text())["architectures"] == [type(model).__name__]
    back = auto.from_pretrained(tmp_path / "m").eval()
    assert type(back) is type(model)
    assert back.state_dict().keys() == model.state_dict().keys()
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in back.state_dict().items())
    batch = collate(dataset(head, tok, 2, seed=2))
    assert all(torch.equal(a, b) for a, b in zip(_outputs(back, batch), _outputs(model, batch), strict=True))
    if head == "token":
        assert back.config.id2label == LABELS


@pytest.mark.parametrize("head", list(HEADS))
def test_a_pretrained_mlm_checkpoint_loads_into_every_head(head: str, tok_dir: Path, tmp_path: Path) -> None:
    from transformers import AutoModelForMultipleChoice, AutoModelForQuestionAnswering, AutoModelForTokenClassification

    torch.manual_seed(5)
    mlm = CrammedBertForMaskedLM(config())
    save_checkpoint(mlm, tmp_path / "ck", tokenizer_path=tok_dir)
    auto = {"token": AutoModelForTokenClassification, "qa": AutoModelForQuestionAnswering,
            "choice": AutoModelForMultipleChoice}[head]
    for model in (auto.from_pretrained(tmp_path / "ck"), load_pretrained(tmp_path / "ck", head=head)):
        assert type(model) is HEADS[head]
        encoder = mlm.encoder.state_dict()
        assert all(torch.equal(v, encoder[k]) for k, v in model.encoder.state_dict().items())


# ----------------------------------------------------------------------------------------------------------
# Trainer


def _trainer(model: torch.nn.Module, train: list[dict[str, torch.Tensor]], evaluate: list[dict[str, torch.Tensor]],
             out: Path, steps: int) -> Any:
    from transformers import Trainer, TrainingArguments

    args = TrainingArguments(output_dir=str(out), max_steps=steps, per_device_train_batch_size=16,
                             per_device_eval_batch_size=32, learning_rate=3e-3, warmup_steps=0, seed=0,
                             use_cpu=True, report_to=[], save_strategy="no", logging_strategy="no",
                             disable_tqdm=True, dataloader_num_workers=0)
    return Trainer(model=model, args=args, train_dataset=train, eval_dataset=evaluate, data_collator=collate)


TRAIN_STEPS = {"token": 40, "qa": 60, "choice": 60}


@pytest.fixture(scope="module")
def trained(tok: Any, tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[torch.nn.Module, float, float]]:
    """Each head fine-tuned with the transformers Trainer on its synthetic task: (model, eval loss before, after)."""
    pytest.importorskip("accelerate", reason="the Trainer needs accelerate (pip install -e '.[trainer]')")
    results = {}
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a model this small only waits on a second thread (20x slower on a busy machine)
    try:
        for head, steps in TRAIN_STEPS.items():
            model = build(head, seed=0).train()
            trainer = _trainer(model, dataset(head, tok, 256, seed=10), dataset(head, tok, 32, seed=11),
                               tmp_path_factory.mktemp(head), steps)
            before = trainer.evaluate()["eval_loss"]
            trainer.train()
            results[head] = (model.eval(), before, trainer.evaluate()["eval_loss"])
    finally:
        torch.set_num_threads(threads)
    return results


@pytest.mark.parametrize("head", list(HEADS))
def test_a_few_trainer_steps_lower_the_loss(head: str, trained: dict[str, tuple[torch.nn.Module, float, float]]) -> None:
    _, before, after = trained[head]
    assert after < 0.7 * before, (before, after)


# ----------------------------------------------------------------------------------------------------------
# pipelines on a cram checkpoint with its tokenizer


def test_token_classification_pipeline_groups_word_pieces_into_the_name(
        trained: dict[str, tuple[torch.nn.Module, float, float]], tok_dir: Path, tmp_path: Path) -> None:
    from transformers import pipeline

    save_checkpoint(trained["token"][0], tmp_path / "ner", tokenizer_path=tok_dir)
    ner = pipeline("token-classification", model=str(tmp_path / "ner"), aggregation_strategy="first", device="cpu")
    rng = random.Random(99)
    texts = [sentence(rng) for _ in range(8)]
    found = 0
    for text, at in texts:
        entities = ner(text)
        for entity in entities:
            assert entity["entity_group"] == "NAME" and text[entity["start"]:entity["end"]] == entity["word"]
        name = text.split()[at]
        assert len(ner.tokenizer.tokenize(name)) > 1  # a name is several word pieces, grouped back into one
        found += [e["word"] for e in entities] == [name]
    assert found >= 6, f"the tagger found the name alone in {found} of 8 sentences"


def test_start_and_end_logits_decode_to_the_name_with_the_tokenizer_offsets(
        trained: dict[str, tuple[torch.nn.Module, float, float]], tok: Any) -> None:
    """The decoding docs/models.md shows for transformers versions without the question-answering pipeline."""
    model = trained["qa"][0]
    rng = random.Random(97)
    right = 0
    for _ in range(8):
        text, at = sentence(rng)
        enc = tok(QUESTION, text, return_offsets_mapping=True, return_tensors="pt", return_token_type_ids=False)
        offsets = enc.pop("offset_mapping")[0]
        with torch.no_grad():
            out = model(**enc)
        outside = torch.tensor([s != 1 for s in enc.sequence_ids()])  # the question and the special tokens
        start = int(out.start_logits[0].masked_fill(outside, float("-inf")).argmax())
        end = start + int(out.end_logits[0, start:].masked_fill(outside[start:], float("-inf")).argmax())
        right += text[offsets[start][0]:offsets[end][1]] == text.split()[at]
    assert right >= 6, f"the reader extracted the name in {right} of 8 contexts"


def test_question_answering_pipeline_extracts_the_name(
        trained: dict[str, tuple[torch.nn.Module, float, float]], tok_dir: Path, tmp_path: Path) -> None:
    from transformers.pipelines import SUPPORTED_TASKS

    if "question-answering" not in SUPPORTED_TASKS:
        import transformers

        pytest.skip(f"transformers {transformers.__version__} has removed the question-answering pipeline")
    from transformers import pipeline

    save_checkpoint(trained["qa"][0], tmp_path / "qa", tokenizer_path=tok_dir)
    qa = pipeline("question-answering", model=str(tmp_path / "qa"), device="cpu")
    rng = random.Random(98)
    right = 0
    for _ in range(8):
        text, at = sentence(rng)
        answer = qa(question=QUESTION, context=text)
        assert text[answer["start"]:answer["end"]] == answer["answer"] and 0 <= answer["score"] <= 1
        right += answer["answer"] == text.split()[at]
    assert right >= 6, f"the reader extracted the name in {right} of 8 contexts"


# ----------------------------------------------------------------------------------------------------------
# convert-attention


@pytest.mark.parametrize("head", list(HEADS))
def test_convert_attention_keeps_the_head_and_its_outputs(head: str, tok: Any, tok_dir: Path, tmp_path: Path) -> None:
    model = build(head, seed=4, pooler="avg")
    save_checkpoint(model, tmp_path / "src", tokenizer_path=tok_dir)
    runner = CliRunner()
    res = runner.invoke(app, ["convert", "--attention", "flash", str(tmp_path / "src"), "-o", str(tmp_path / "flash")])
    assert res.exit_code == 0, res.output
    res = runner.invoke(app, ["convert", str(tmp_path / "flash"), "-o", str(tmp_path / "back")])
    assert res.exit_code == 0, res.output
    report = json.loads((tmp_path / "back" / "report.json").read_text())
    assert report["head"] == head and report["parity"]["max_abs_delta_logits"] < 1e-5
    back = load_pretrained(tmp_path / "back", head=head)
    assert type(back) is type(model) and back.config.pooler == "avg"
    batch = collate(dataset(head, tok, 2, seed=3))
    assert all(torch.equal(a, b) for a, b in zip(_outputs(back, batch), _outputs(model, batch), strict=True))


@pytest.mark.parametrize("head", ["choice", "cls"])
def test_gradient_accumulation_in_the_trainer_matches_one_big_batch(head: str, tok: Any, tmp_path: Path) -> None:
    """cram's losses are means, so the Trainer must divide by the accumulation steps itself (`accepts_loss_kwargs`
    False): one SGD step over 2 × 8 examples moves the weights as one step over the same 16. The GLUE sequence
    classifier too: "is the name in the first half of the sentence"."""
    pytest.importorskip("accelerate", reason="the Trainer needs accelerate (pip install -e '.[trainer]')")
    from transformers import Trainer, TrainingArguments

    from cramcli.model import CrammedBertForSequenceClassification

    if head == "cls":
        rows = dataset("token", tok, 16, seed=12)
        data = [{**r, "labels": torch.tensor(int(r["labels"][:6].gt(0).any()))} for r in rows]
    else:
        data = dataset(head, tok, 16, seed=12)
    no_dropout = {"hidden_dropout": 0.0, "attention_dropout": 0.0, "embedding_dropout": 0.0, "classifier_dropout": 0.0}
    moved = []
    for batch, accumulate in ((16, 1), (8, 2)):
        torch.manual_seed(6)
        model = (CrammedBertForSequenceClassification(config(num_labels=2, **no_dropout)) if head == "cls"
                 else build(head, seed=6, **no_dropout))
        start = {k: v.clone() for k, v in model.state_dict().items()}
        args = TrainingArguments(output_dir=str(tmp_path / str(batch)), max_steps=1, per_device_train_batch_size=batch,
                                 gradient_accumulation_steps=accumulate, optim="sgd", learning_rate=0.5,
                                 lr_scheduler_type="constant", seed=0, use_cpu=True, report_to=[], save_strategy="no",
                                 logging_strategy="no", disable_tqdm=True)
        Trainer(model=model, args=args, train_dataset=data, data_collator=collate).train()
        moved.append(torch.cat([(v - start[k]).flatten() for k, v in model.state_dict().items()]))
    assert moved[0].abs().max() > 1e-4
    assert torch.allclose(moved[1], moved[0], atol=1e-6, rtol=1e-4), (moved[1] / moved[0]).nanmedian()
