"""Dedup state: exact keys, MinHash LSH banding as datasketch chooses it, and the compact key set."""

from __future__ import annotations

import random

from datasketch.lsh import _optimal_param

from cramcli.budgets import DedupBudget
from cramcli.data.dedup import Deduplicator, KeySet, exact_key, lsh_bands, signature


def text(rng: random.Random, n: int = 150) -> str:
    return " ".join(f"w{rng.randrange(5000)}" for _ in range(n))


def test_banding_matches_datasketch_minhashlsh():
    for threshold, num_perm in [(0.8, 128), (0.5, 64), (0.9, 256)]:
        assert lsh_bands(threshold, num_perm) == _optimal_param(threshold, num_perm, 0.5, 0.5)


def test_near_duplicates_are_caught_and_different_documents_kept():
    rng = random.Random(0)
    budget = DedupBudget()
    dedup = Deduplicator(budget)
    originals = [text(rng) for _ in range(200)]
    for doc in originals:
        assert dedup.check(exact_key(doc), signature(doc, budget)) is None
    for doc in originals[:50]:
        words = doc.split()
        words[70] = "changed"  # one word of 150: Jaccard of 5-shingles ≈ 0.93
        edited = " ".join(words)
        assert dedup.check(exact_key(edited), signature(edited, budget)) == "near"
        assert dedup.check(exact_key(doc), signature(doc, budget)) == "exact"
    fresh = [text(rng) for _ in range(50)]
    assert all(dedup.check(exact_key(d), signature(d, budget)) is None for d in fresh)


def test_only_exact_dedup_when_near_is_off():
    budget = DedupBudget(near=False)
    dedup = Deduplicator(budget)
    assert dedup.check(exact_key("a b c"), None) is None
    assert dedup.check(exact_key("a b c"), None) == "exact"
    assert dedup.check(exact_key("a b d"), None) is None


def test_key_set_stays_exact_across_merges():
    rng = random.Random(1)
    keys = [rng.getrandbits(64) for _ in range(300_000)]
    stored = KeySet()
    for i in range(0, len(keys), 2):
        stored.add([keys[i]])
    assert len(stored) == 150_000 and len(stored.sorted) > 0  # merged at least once
    assert all(stored.contains_any([keys[i]]) for i in range(0, 2000, 2))
    assert not any(stored.contains_any([keys[i]]) for i in range(1, 2000, 2))
