"""Synthetic downstream tasks for `cram demo`, generated from the embedded corpus' world and grammar.

They are written in the original GLUE file layouts so that `cram glue --glue-dir DIR` reads them with the very
same loader as real GLUE, but they are not GLUE: each is named for what it is (`NAMES`, `DESCRIPTIONS`).
- `SST-2/` (single sentence, accuracy): is the sentence grammatical and true to the fact table?
- `RTE/` (pair, accuracy): does sentence 2 follow from the facts stated in sentence 1?
- `STS-B/` (pair, regression 0–5, Pearson): how many of five attributes do two person descriptions share?
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Callable
from pathlib import Path

from cramcli.data.embedded import (
    ANIMALS,
    CAPITALS,
    CLASSES,
    COLORS,
    LANGUAGES,
    PEOPLE,
    PETS,
    PROFESSIONS,
    REGIONS,
    World,
    articles,
    grammar_sentence,
    world,
)
from cramcli.utils import atomic

NAMES = {"sst2": "synthetic SST-2-style task", "rte": "synthetic RTE-style task", "stsb": "synthetic STS-B-style task"}
DESCRIPTIONS = {
    "sst2": "synthetic SST-2-style task from the embedded corpus: is the sentence grammatical and true?",
    "rte": "synthetic RTE-style task from the embedded corpus: does sentence 2 follow from sentence 1?",
    "stsb": "synthetic STS-B-style task from the embedded corpus: how many of five attributes do two "
            "descriptions share (0-5)?",
}
"""What each generated task is; `cram demo` shows these, never the bare GLUE task names."""


def _other(rng: random.Random, options: tuple[str, ...] | list[str], not_this: str) -> str:
    return rng.choice([o for o in options if o != not_this])


def _sst2_example(rng: random.Random, w: World, label: int) -> tuple[str, int]:
    """Label 1: grammatical and true; 0: an agreement error or a fact that contradicts the table."""
    if rng.random() < 0.5:
        return grammar_sentence(rng, grammatical=bool(label)), label
    if rng.random() < 0.5:
        k = rng.choice(w.countries)
        kind = rng.randrange(3)
        if kind == 0:
            cap = k.capital if label else _other(rng, CAPITALS, k.capital)
            return f"the capital of {k.name} is {cap} .", label
        if kind == 1:
            lang = k.language if label else _other(rng, LANGUAGES, k.language)
            return f"people in {k.name} speak {lang} .", label
        region = k.region if label else _other(rng, REGIONS, k.region)
        return f"{k.name} lies in the {region} .", label
    animal = rng.choice(list(ANIMALS))
    cls = ANIMALS[animal][1]
    shown = cls if label else _other(rng, list(CLASSES), cls)
    return f"a {animal} is a kind of {shown} .", label


def _rte_example(rng: random.Random, w: World, entailed: bool) -> tuple[str, str, str]:
    """Sentence 1 states facts about a person; sentence 2 follows from them, or changes one value or the person."""
    p = rng.choice(w.people)
    k = w.country_of(p.city)
    stated = rng.sample(["city", "profession", "pet", "color"], k=rng.randint(2, 3))
    parts = {
        "city": f"{p.name} lives in {p.city} .",
        "profession": f"{p.name} works as a {p.profession} .",
        "pet": f"{p.name} has a {p.pet} .",
        "color": f"{p.name} likes the color {p.color} .",
    }
    s1 = [parts[s] for s in stated]
    if "city" in stated and rng.random() < 0.5:
        s1.append(f"{p.city} is in {k.name} .")
    rng.shuffle(s1)
    slot = rng.choice(stated)
    name = p.name
    if not entailed and rng.random() < 0.25:  # right value, wrong person
        name = _other(rng, [q.name for q in w.people], p.name)
        value = {"city": p.city, "profession": p.profession, "pet": p.pet, "color": p.color}[slot]
    else:
        true = {"city": p.city, "profession": p.profession, "pet": p.pet, "color": p.color}[slot]
        pool = {"city": w.cities, "profession": PROFESSIONS, "pet": PETS, "color": COLORS}[slot]
        value = true if entailed else _other(rng, pool, true)
    hypothesis = {
        "city": f"{name} is based in {value} .",
        "profession": f"{name} is a {value} .",
        "pet": f"{name} owns a {value} .",
        "color": f"the favourite color of {name} is {value} .",
    }[slot]
    if entailed and slot == "city" and f"{p.city} is in {k.name} ." in s1 and rng.random() < 0.5:
        hypothesis = f"{name} lives in {k.name} ."  # one hop through a stated fact
    return " ".join(s1), hypothesis, "entailment" if entailed else "not_entailment"


_STS_SLOTS = ("name", "profession", "city", "pet", "color")


def _describe(rng: random.Random, a: dict[str, str]) -> str:
    templates = (
        "{name} is a {profession} from {city} who has a {pet} and likes {color} .",
        "{name} , a {profession} who likes {color} , lives in {city} with a {pet} .",
        "in {city} lives {name} , a {profession} with a {pet} and a love of {color} .",
    )
    return rng.choice(templates).format(**a)


def _stsb_example(rng: random.Random, w: World, shares: int) -> tuple[str, str, float]:
    """Two person descriptions sharing `score` of five attributes (the rest differ)."""
    pools = {"name": PEOPLE, "profession": PROFESSIONS, "city": w.cities, "pet": PETS, "color": COLORS}
    a = {s: rng.choice(pools[s]) for s in _STS_SLOTS}
    shared = set(rng.sample(_STS_SLOTS, k=shares))
    b = {s: a[s] if s in shared else _other(rng, pools[s], a[s]) for s in _STS_SLOTS}
    return _describe(rng, a), _describe(rng, b), float(len(shared))


def _sample(make: Callable[[random.Random, int], tuple], rng: random.Random, n: int, classes: int) -> list[tuple]:
    """`n` examples, the target cycling through `classes` values (exactly balanced), in random order.

    Train and dev are independent draws from the same distribution: the world is small, so a short fact
    sentence can occur in both (knowing the table is the skill measured); grammar and descriptions rarely repeat.
    """
    out = [tuple(articles(x) if isinstance(x, str) else x for x in make(rng, i % classes)) for i in range(n)]
    rng.shuffle(out)
    return out


def _write_tsv(path: Path, header: list[str], rows: list[list[str]]) -> None:
    lines = ["\t".join(header)] + ["\t".join(r) for r in rows]
    atomic.write_text(path, "\n".join(lines) + "\n")


def write_glue_tasks(out_dir: Path, seed: int, num_train: int, num_dev: int) -> dict:
    """Write `SST-2/`, `RTE/` and `STS-B/` (train.tsv, dev.tsv) under `out_dir` in the original GLUE layouts.

    Returns {"dir", "seed", "synthetic": True, "tasks": {name: {"name", "description", "folder", "train", "dev",
    "num_train", "num_dev", "metric", "baseline", "baseline_kind", ...}}}; the baselines are measured on the written dev sets (majority class for
    the classification tasks, a constant predictor — Pearson 0 — for STS-B).
    """
    out_dir = Path(out_dir)
    w = world()
    makers: dict[str, tuple[Callable[[random.Random, int], tuple], int]] = {
        "sst2": (lambda r, t: _sst2_example(r, w, t), 2),
        "rte": (lambda r, t: _rte_example(r, w, bool(t)), 2),
        "stsb": (lambda r, t: _stsb_example(r, w, t), len(_STS_SLOTS) + 1),
    }
    tasks: dict[str, dict] = {}
    for name, (make, classes) in makers.items():
        train = _sample(make, random.Random(f"cram-embedded-{name}-train-{seed}"), num_train, classes)
        dev = _sample(make, random.Random(f"cram-embedded-{name}-dev-{seed}"), num_dev, classes)
        tasks[name] = _write_task(out_dir, name, train, dev)
    return {"dir": str(out_dir), "seed": seed, "synthetic": True, "tasks": tasks}


def _write_task(out_dir: Path, name: str, train: list[tuple], dev: list[tuple]) -> dict:
    if name == "sst2":
        folder, header = "SST-2", ["sentence", "label"]
        fmt: Callable[[int, tuple], list[str]] = lambda i, e: [e[0], str(e[1])]  # noqa: E731
    elif name == "rte":
        folder, header = "RTE", ["index", "sentence1", "sentence2", "label"]
        fmt = lambda i, e: [str(i), e[0], e[1], e[2]]  # noqa: E731
    else:
        folder = "STS-B"
        header = ["index", "genre", "filename", "year", "old_index", "source1", "source2", "sentence1",
                  "sentence2", "score"]
        fmt = lambda i, e: [str(i), "main-embedded", "cram", "demo", f"{i:04d}", "none", "none", e[0], e[1],  # noqa: E731
                            f"{e[2]:.3f}"]
    paths = {}
    for split, rows in (("train", train), ("dev", dev)):
        paths[split] = out_dir / folder / f"{split}.tsv"
        _write_tsv(paths[split], header, [fmt(i, e) for i, e in enumerate(rows)])
    info = {"name": NAMES[name], "description": DESCRIPTIONS[name], "folder": folder, "train": str(paths["train"]),
            "dev": str(paths["dev"]), "num_train": len(train), "num_dev": len(dev)}
    if name == "stsb":
        return {**info, "metric": "pearson", "baseline": 0.0, "baseline_kind": "constant predictor"}
    counts = Counter(e[-1] for e in dev)
    label, count = counts.most_common(1)[0] if counts else ("", 0)
    return {**info, "metric": "accuracy", "baseline": count / max(len(dev), 1),
            "baseline_kind": "majority class", "majority_label": str(label)}
