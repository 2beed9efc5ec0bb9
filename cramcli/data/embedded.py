"""The embedded corpus: English-like text generated from a seed by code, with structure a tiny model can learn.

No files, no network. One fixed "world" (a fact table: countries with capitals, languages and regions; people
with a profession, home city, pet and favourite colour; animals with their class) is the same for every seed;
the seed only decides which documents are sampled. A document is a few sentences about one country, person or
animal, consistent with the table, mixed with sentences from a small grammar with subject–verb agreement
across relative clauses ("the dogs that the teacher sees are tired ."). Masked-LM loss can therefore fall far
below the unigram entropy: agreement, determiners, facts and within-document repetition are all predictable.

Three downstream tasks come from the same world and grammar, written in the original GLUE file layouts so
`cram glue --glue-dir DIR` reads them with the very same loader as real GLUE:
- `SST-2/` (single sentence, accuracy): is the sentence grammatical and true to the fact table?
- `RTE/` (pair, accuracy): does sentence 2 follow from the facts stated in sentence 1?
- `STS-B/` (pair, regression 0–5, Pearson): how many of five attributes do two person descriptions share?
"""

from __future__ import annotations

import random
import re
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from cramcli.utils import atomic

# ----------------------------------------------------------------------------------------------------------
# the world (fixed; independent of the seed so the corpus and the tasks always agree)

_COUNTRIES = ("dravia", "keltor", "molvan", "sarnia", "toria", "velmar", "brisca", "calden", "orlund", "pemria",
              "quessa", "zandor")
_CAPITALS = ("dravos", "kelby", "molport", "sarnel", "torhaven", "velsa", "briskton", "calmont", "orvik", "pemton",
             "quesby", "zanfield")
_TOWNS = ("ashford", "bellmoor", "coldwater", "deepvale", "elmridge", "fairport", "glenwood", "highgate",
          "ironbridge", "lakeside", "millbrook", "stonehill")
_LANGUAGES = ("dravic", "keltish", "molvic", "sarnish", "torian", "velmic", "briscan", "caldish", "orlic",
              "pemish", "quessic", "zandic")
_REGIONS = ("north", "south", "east", "west")
_PEOPLE = ("anna", "ben", "clara", "david", "emma", "felix", "grace", "henry", "iris", "jack", "kate", "leo",
           "maria", "nora", "oscar", "paul", "rosa", "sam", "tom", "vera", "will", "zoe", "alice", "hugo")
_PROFESSIONS = ("teacher", "doctor", "farmer", "baker", "painter", "writer", "pilot", "nurse", "singer",
                "builder", "sailor", "lawyer")
_COLORS = ("red", "blue", "green", "yellow", "black", "white", "orange", "purple")
# animal → (plural, class)
_ANIMALS = {
    "dog": ("dogs", "mammal"), "cat": ("cats", "mammal"), "horse": ("horses", "mammal"), "cow": ("cows", "mammal"),
    "rabbit": ("rabbits", "mammal"), "eagle": ("eagles", "bird"), "owl": ("owls", "bird"),
    "parrot": ("parrots", "bird"), "duck": ("ducks", "bird"), "shark": ("sharks", "fish"), "eel": ("eels", "fish"),
    "snake": ("snakes", "reptile"), "lizard": ("lizards", "reptile"), "turtle": ("turtles", "reptile"),
    "ant": ("ants", "insect"), "bee": ("bees", "insect"), "beetle": ("beetles", "insect"),
}
_CLASSES = {"mammal": ("mammals", "have fur"), "bird": ("birds", "have feathers"), "fish": ("fish", "live in water"),
            "reptile": ("reptiles", "have scales"), "insect": ("insects", "have six legs")}
_PETS = ("dog", "cat", "horse", "rabbit", "parrot", "duck", "snake", "lizard", "turtle", "owl")
_ADJECTIVES = ("happy", "tired", "quiet", "old", "young", "small", "big", "busy", "hungry", "calm")
# (singular, plural) verb forms: agreement is what the grammar exercises
_INTRANSITIVE = (("sleeps", "sleep"), ("runs", "run"), ("sings", "sing"), ("waits", "wait"), ("smiles", "smile"),
                 ("works", "work"))
_TRANSITIVE = (("sees", "see"), ("likes", "like"), ("follows", "follow"), ("helps", "help"), ("knows", "know"),
               ("calls", "call"))
_COPULA = (("is", "are"), ("was", "were"))
_DET = ({"sing": ("the", "a", "every", "this", "that"), "plur": ("the", "some", "many", "these", "two", "three")})

_WORLD_SEED = "cram-embedded-world-1"


@dataclass(frozen=True)
class Country:
    name: str
    capital: str
    town: str
    language: str
    region: str


@dataclass(frozen=True)
class Person:
    name: str
    profession: str
    city: str
    pet: str
    color: str


@dataclass(frozen=True)
class World:
    countries: tuple[Country, ...]
    people: tuple[Person, ...]

    @property
    def cities(self) -> tuple[str, ...]:
        return tuple(c for k in self.countries for c in (k.capital, k.town))

    def country_of(self, city: str) -> Country:
        return next(k for k in self.countries if city in (k.capital, k.town))


@lru_cache(maxsize=1)
def world() -> World:
    """The fact table shared by the corpus and the tasks (fixed, so every seed describes the same world)."""
    rng = random.Random(_WORLD_SEED)
    towns, languages = list(_TOWNS), list(_LANGUAGES)
    rng.shuffle(towns)
    rng.shuffle(languages)
    countries = tuple(Country(n, c, t, lang, rng.choice(_REGIONS))
                      for n, c, t, lang in zip(_COUNTRIES, _CAPITALS, towns, languages, strict=True))
    cities = [c for k in countries for c in (k.capital, k.town)]
    people = tuple(Person(p, rng.choice(_PROFESSIONS), rng.choice(cities), rng.choice(_PETS), rng.choice(_COLORS))
                   for p in _PEOPLE)
    return World(countries, people)


# ----------------------------------------------------------------------------------------------------------
# the grammar: noun phrases with relative clauses, verbs agreeing with their subject


def _noun(rng: random.Random) -> tuple[str, str, bool]:
    """A random common noun in a random number: (word, number, is_person)."""
    num = rng.choice(("sing", "plur"))
    if rng.random() < 0.5:
        word = rng.choice(_PROFESSIONS)
        return (word if num == "sing" else word + "s"), num, True
    animal = rng.choice(list(_ANIMALS))
    return (animal if num == "sing" else _ANIMALS[animal][0]), num, False


def _np(rng: random.Random, depth: int) -> tuple[str, str]:
    """A noun phrase and its grammatical number; `depth` > 0 allows a relative clause (nesting)."""
    word, num, person = _noun(rng)
    det = rng.choice(_DET[num])
    adj = rng.choice(_ADJECTIVES) + " " if rng.random() < 0.3 else ""
    text = f"{det} {adj}{word}"
    if depth > 0 and rng.random() < 0.6:
        rel = "who" if person else "that"
        if rng.random() < 0.5:  # subject relative: the verb agrees with the head noun
            obj, _ = _np(rng, depth - 1)
            text += f" {rel} {_verb(rng, _TRANSITIVE, num)} {obj}"
        else:  # object relative: the verb agrees with the inner subject, not the head
            inner, inner_num = _np(rng, depth - 1)
            text += f" {rel} {inner} {_verb(rng, _TRANSITIVE, inner_num)}"
    return text, num


def _articles(text: str) -> str:
    """"a" → "an" before a vowel, applied to every finished sentence."""
    return _AN.sub(r"an \1", text)


_AN = re.compile(r"\ba ([aeiou])")


def _verb(rng: random.Random, table: tuple[tuple[str, str], ...], num: str) -> str:
    return rng.choice(table)[0 if num == "sing" else 1]


def _flip(num: str) -> str:
    return "plur" if num == "sing" else "sing"


def grammar_sentence(rng: random.Random, grammatical: bool = True) -> str:
    """One sentence of the agreement grammar; `grammatical=False` gives the main verb the wrong number."""
    subj, num = _np(rng, depth=2)
    vnum = num if grammatical else _flip(num)
    kind = rng.random()
    if kind < 0.35:
        pred = _verb(rng, _INTRANSITIVE, vnum)
    elif kind < 0.7:
        pred = f"{_verb(rng, _COPULA, vnum)} {rng.choice(_ADJECTIVES)}"
    else:
        obj, _ = _np(rng, depth=1)
        pred = f"{_verb(rng, _TRANSITIVE, vnum)} {obj}"
    return f"{subj} {pred} ."


# ----------------------------------------------------------------------------------------------------------
# fact sentences (true to the world unless a wrong value is passed in)


def _country_facts(k: Country) -> list[str]:
    return [
        f"the capital of {k.name} is {k.capital} .",
        f"{k.capital} is the capital of {k.name} .",
        f"people in {k.name} speak {k.language} .",
        f"{k.name} lies in the {k.region} .",
        f"{k.town} is a town in {k.name} .",
        f"in {k.town} most people speak {k.language} .",
    ]


def _person_facts(p: Person, k: Country) -> list[str]:
    pet_plural, cls = _ANIMALS[p.pet]
    return [
        f"{p.name} is a {p.profession} who lives in {p.city} .",
        f"{p.name} works as a {p.profession} .",
        f"{p.name} lives in {p.city} , which is in {k.name} .",
        f"{p.name} has a {p.pet} .",
        f"the {p.pet} that {p.name} owns is a {cls} .",
        f"{p.name} likes the color {p.color} .",
        f"the favourite color of {p.name} is {p.color} .",
        f"{p.name} speaks {k.language} .",
        f"every morning {p.name} walks to work in {p.city} .",
    ]


def _animal_facts(animal: str) -> list[str]:
    plural, cls = _ANIMALS[animal]
    cls_plural, feature = _CLASSES[cls]
    return [
        f"a {animal} is a kind of {cls} .",
        f"{plural} are {cls_plural} .",
        f"{cls_plural} {feature} .",
        f"like all {cls_plural} , {plural} {feature} .",
        f"the {animal} is a {cls} .",
    ]


def _document(rng: random.Random, w: World) -> str:
    topic = rng.random()
    if topic < 0.4:
        p = rng.choice(w.people)
        k = w.country_of(p.city)
        facts = _person_facts(p, k)
        extra = [rng.choice(_country_facts(k)), rng.choice(_animal_facts(p.pet))]
    elif topic < 0.7:
        k = rng.choice(w.countries)
        facts = _country_facts(k)
        residents = [p for p in w.people if w.country_of(p.city) is k]
        extra = [rng.choice(_person_facts(p, k)) for p in residents[:2]]
    else:
        animal = rng.choice(list(_ANIMALS))
        facts = _animal_facts(animal)
        owners = [p for p in w.people if p.pet == animal]
        extra = [f"{p.name} has a {animal} ." for p in owners[:2]]
    sentences = rng.sample(facts, k=min(len(facts), rng.randint(2, 4))) + extra
    sentences += [grammar_sentence(rng) for _ in range(rng.randint(1, 3))]
    rng.shuffle(sentences)
    return " ".join(sentences)


def iter_documents(seed: int, num_documents: int) -> Iterator[str]:
    """`num_documents` documents (a few sentences each), the same for the same seed on every machine."""
    rng = random.Random(f"cram-embedded-docs-{seed}")
    w = world()
    for _ in range(num_documents):
        yield _articles(_document(rng, w))


# ----------------------------------------------------------------------------------------------------------
# downstream tasks in the original GLUE layouts


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
            cap = k.capital if label else _other(rng, _CAPITALS, k.capital)
            return f"the capital of {k.name} is {cap} .", label
        if kind == 1:
            lang = k.language if label else _other(rng, _LANGUAGES, k.language)
            return f"people in {k.name} speak {lang} .", label
        region = k.region if label else _other(rng, _REGIONS, k.region)
        return f"{k.name} lies in the {region} .", label
    animal = rng.choice(list(_ANIMALS))
    cls = _ANIMALS[animal][1]
    shown = cls if label else _other(rng, list(_CLASSES), cls)
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
        pool = {"city": w.cities, "profession": _PROFESSIONS, "pet": _PETS, "color": _COLORS}[slot]
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
    pools = {"name": _PEOPLE, "profession": _PROFESSIONS, "city": w.cities, "pet": _PETS, "color": _COLORS}
    a = {s: rng.choice(pools[s]) for s in _STS_SLOTS}
    shared = set(rng.sample(_STS_SLOTS, k=shares))
    b = {s: a[s] if s in shared else _other(rng, pools[s], a[s]) for s in _STS_SLOTS}
    return _describe(rng, a), _describe(rng, b), float(len(shared))


def _sample(make: Callable[[random.Random, int], tuple], rng: random.Random, n: int, classes: int) -> list[tuple]:
    """`n` examples, the target cycling through `classes` values (exactly balanced), in random order.

    Train and dev are independent draws from the same distribution: the world is small, so a short fact
    sentence can occur in both (knowing the table is the skill measured); grammar and descriptions rarely repeat.
    """
    out = [tuple(_articles(x) if isinstance(x, str) else x for x in make(rng, i % classes)) for i in range(n)]
    rng.shuffle(out)
    return out


def _write_tsv(path: Path, header: list[str], rows: list[list[str]]) -> None:
    lines = ["\t".join(header)] + ["\t".join(r) for r in rows]
    atomic.write_text(path, "\n".join(lines) + "\n")


def write_glue_tasks(out_dir: Path, seed: int, num_train: int, num_dev: int) -> dict:
    """Write `SST-2/`, `RTE/` and `STS-B/` (train.tsv, dev.tsv) under `out_dir` in the original GLUE layouts.

    Returns {"dir", "seed", "tasks": {name: {"folder", "train", "dev", "num_train", "num_dev", "metric",
    "baseline", "baseline_kind", ...}}}; the baselines are measured on the written dev sets (majority class for
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
    return {"dir": str(out_dir), "seed": seed, "tasks": tasks}


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
    info = {"folder": folder, "train": str(paths["train"]), "dev": str(paths["dev"]), "num_train": len(train),
            "num_dev": len(dev)}
    if name == "stsb":
        return {**info, "metric": "pearson", "baseline": 0.0, "baseline_kind": "constant predictor"}
    counts = Counter(e[-1] for e in dev)
    label, count = counts.most_common(1)[0] if counts else ("", 0)
    return {**info, "metric": "accuracy", "baseline": count / max(len(dev), 1),
            "baseline_kind": "majority class", "majority_label": str(label)}
