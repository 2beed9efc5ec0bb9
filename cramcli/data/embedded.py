"""The embedded corpus: English-like text generated from a seed by code, with structure a tiny model can learn.

No files, no network. One fixed "world" (a fact table: countries with capitals, languages and regions; people
with a profession, home city, pet and favourite colour; animals with their class) is the same for every seed;
the seed only decides which documents are sampled. A document is a few sentences about one country, person or
animal, consistent with the table, mixed with sentences from a small grammar with subject–verb agreement
across relative clauses ("the dogs that the teacher sees are tired ."). Masked-LM loss can therefore fall far
below the unigram entropy: agreement, determiners, facts and within-document repetition are all predictable.

This is the `embedded` source of prepare-data and train-tokenizer. The world and grammar are public so that
`cram demo` can build synthetic downstream tasks from them (cramcli/demo/tasks.py).
"""

from __future__ import annotations

import random
import re
from collections.abc import Iterator
from dataclasses import dataclass
from functools import lru_cache

# ----------------------------------------------------------------------------------------------------------
# the world (fixed; independent of the seed so the corpus and the tasks always agree)

_COUNTRIES = ("dravia", "keltor", "molvan", "sarnia", "toria", "velmar", "brisca", "calden", "orlund", "pemria",
              "quessa", "zandor")
CAPITALS = ("dravos", "kelby", "molport", "sarnel", "torhaven", "velsa", "briskton", "calmont", "orvik", "pemton",
            "quesby", "zanfield")
_TOWNS = ("ashford", "bellmoor", "coldwater", "deepvale", "elmridge", "fairport", "glenwood", "highgate",
          "ironbridge", "lakeside", "millbrook", "stonehill")
LANGUAGES = ("dravic", "keltish", "molvic", "sarnish", "torian", "velmic", "briscan", "caldish", "orlic",
             "pemish", "quessic", "zandic")
REGIONS = ("north", "south", "east", "west")
PEOPLE = ("anna", "ben", "clara", "david", "emma", "felix", "grace", "henry", "iris", "jack", "kate", "leo",
          "maria", "nora", "oscar", "paul", "rosa", "sam", "tom", "vera", "will", "zoe", "alice", "hugo")
PROFESSIONS = ("teacher", "doctor", "farmer", "baker", "painter", "writer", "pilot", "nurse", "singer",
               "builder", "sailor", "lawyer")
COLORS = ("red", "blue", "green", "yellow", "black", "white", "orange", "purple")
# animal → (plural, class)
ANIMALS = {
    "dog": ("dogs", "mammal"), "cat": ("cats", "mammal"), "horse": ("horses", "mammal"), "cow": ("cows", "mammal"),
    "rabbit": ("rabbits", "mammal"), "eagle": ("eagles", "bird"), "owl": ("owls", "bird"),
    "parrot": ("parrots", "bird"), "duck": ("ducks", "bird"), "shark": ("sharks", "fish"), "eel": ("eels", "fish"),
    "snake": ("snakes", "reptile"), "lizard": ("lizards", "reptile"), "turtle": ("turtles", "reptile"),
    "ant": ("ants", "insect"), "bee": ("bees", "insect"), "beetle": ("beetles", "insect"),
}
CLASSES = {"mammal": ("mammals", "have fur"), "bird": ("birds", "have feathers"), "fish": ("fish", "live in water"),
           "reptile": ("reptiles", "have scales"), "insect": ("insects", "have six legs")}
PETS = ("dog", "cat", "horse", "rabbit", "parrot", "duck", "snake", "lizard", "turtle", "owl")
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
    towns, languages = list(_TOWNS), list(LANGUAGES)
    rng.shuffle(towns)
    rng.shuffle(languages)
    countries = tuple(Country(n, c, t, lang, rng.choice(REGIONS))
                      for n, c, t, lang in zip(_COUNTRIES, CAPITALS, towns, languages, strict=True))
    cities = [c for k in countries for c in (k.capital, k.town)]
    people = tuple(Person(p, rng.choice(PROFESSIONS), rng.choice(cities), rng.choice(PETS), rng.choice(COLORS))
                   for p in PEOPLE)
    return World(countries, people)


# ----------------------------------------------------------------------------------------------------------
# the grammar: noun phrases with relative clauses, verbs agreeing with their subject


def _noun(rng: random.Random) -> tuple[str, str, bool]:
    """A random common noun in a random number: (word, number, is_person)."""
    num = rng.choice(("sing", "plur"))
    if rng.random() < 0.5:
        word = rng.choice(PROFESSIONS)
        return (word if num == "sing" else word + "s"), num, True
    animal = rng.choice(list(ANIMALS))
    return (animal if num == "sing" else ANIMALS[animal][0]), num, False


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


def articles(text: str) -> str:
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
    pet_plural, cls = ANIMALS[p.pet]
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
    plural, cls = ANIMALS[animal]
    cls_plural, feature = CLASSES[cls]
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
        animal = rng.choice(list(ANIMALS))
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
        yield articles(_document(rng, w))
