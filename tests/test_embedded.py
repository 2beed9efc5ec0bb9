"""The embedded corpus: deterministic per seed, with structure (facts, agreement) a tiny model can learn."""

from __future__ import annotations

import math
from collections import Counter

import pytest

from cramcli.data import embedded


def test_documents_are_deterministic_per_seed() -> None:
    a = list(embedded.iter_documents(seed=3, num_documents=50))
    assert a == list(embedded.iter_documents(seed=3, num_documents=50))
    assert a != list(embedded.iter_documents(seed=4, num_documents=50))
    assert len(a) == 50
    # a prefix is a prefix: asking for more documents does not change the first ones
    assert list(embedded.iter_documents(seed=3, num_documents=10)) == a[:10]


def test_documents_have_learnable_structure() -> None:
    docs = list(embedded.iter_documents(seed=0, num_documents=2000))
    assert all(3 <= d.count(" .") <= 12 for d in docs)  # a few sentences each
    words = Counter(w for d in docs for w in d.split())
    n = sum(words.values())
    entropy = -sum(c / n * math.log(c / n) for c in words.values())
    assert 3.5 < entropy < 6.0  # a real spread of words, far above what MLM must reach in the demo
    assert all(d == d.lower() and d.isascii() for d in docs)
    # facts come from the table and are stated consistently
    w = embedded.world()
    text = " ".join(docs)
    k = w.countries[0]
    assert f"the capital of {k.name} is {k.capital} ." in text
    for other in w.countries[1:]:
        assert f"the capital of {k.name} is {other.capital} ." not in text
    assert "an eagle" in text and " a eagle" not in text


@pytest.mark.parametrize("grammatical", [True, False])
def test_grammar_agreement(grammatical: bool) -> None:
    import random

    rng = random.Random(0)
    sing_verbs = {s for s, _ in embedded._INTRANSITIVE + embedded._COPULA + embedded._TRANSITIVE}
    plur_verbs = {p for _, p in embedded._INTRANSITIVE + embedded._COPULA + embedded._TRANSITIVE}
    sing_nouns = set(embedded.PROFESSIONS) | set(embedded.ANIMALS)
    plur_nouns = {p + "s" for p in embedded.PROFESSIONS} | {p for p, _ in embedded.ANIMALS.values()}
    checked = 0
    for _ in range(300):
        words = embedded.articles(embedded.grammar_sentence(rng, grammatical=grammatical)).split()
        if "that" in words or "who" in words:  # only plain clauses: "det [adj] noun verb ..."
            continue
        noun = words[2] if words[1] in embedded._ADJECTIVES else words[1]
        verb = words[words.index(noun) + 1]
        assert noun in sing_nouns | plur_nouns and verb in sing_verbs | plur_verbs, words
        assert ((noun in plur_nouns) == (verb in plur_verbs)) == grammatical, words
        checked += 1
    assert checked > 50
