import torch

from cramcli.budgets import MaskingBudget
from cramcli.train.masking import mask_tokens

SPECIAL = (0, 1, 2, 3, 4, 5, 6)


def _ids(rows=400, seq=128, vocab=1000):
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(7, vocab, (rows, seq), generator=g)
    ids[:, -1] = 5  # a <sep> per row
    return ids


def test_bernoulli_15_80_10_10():
    ids = _ids()
    inputs, labels = mask_tokens(ids, MaskingBudget(), mask_id=6, vocab_size=1000, special_ids=SPECIAL,
                                 generator=torch.Generator().manual_seed(0))
    sel = labels != -100
    rate = sel.float().mean().item()
    assert abs(rate - 0.15 * 127 / 128) < 0.005
    assert not sel[:, -1].any()  # special tokens are never selected
    assert (labels[sel] == ids[sel]).all() and (inputs[~sel] == ids[~sel]).all()
    masked = (inputs[sel] == 6).float().mean().item()
    changed = ((inputs[sel] != 6) & (inputs[sel] != ids[sel])).float().mean().item()
    kept = (inputs[sel] == ids[sel]).float().mean().item()
    assert abs(masked - 0.8) < 0.015 and abs(changed - 0.1) < 0.015 and abs(kept - 0.1) < 0.015


def test_exact_25_percent():
    ids = _ids(rows=200)
    inputs, labels = mask_tokens(ids, MaskingBudget(scheme="exact", rate=0.25), mask_id=6, vocab_size=1000,
                                 special_ids=SPECIAL, generator=torch.Generator().manual_seed(0))
    sel = labels != -100
    assert (sel.sum(1) == 32).all()  # exactly round(0.25·128) per row
    masked = ((inputs == 6) & sel).sum(1)  # first round(0.8·32) of the selection → <mask>
    assert (masked >= 26).all() and masked.float().mean() < 26.1  # (a random id can also be <mask>)
    unchanged = ((inputs == ids) & sel).sum(1)
    assert (unchanged >= 3).all() and unchanged.float().mean() < 3.1  # last 3 stay (a random id may equal)


def test_masking_is_seeded():
    ids = _ids(rows=8)
    a = mask_tokens(ids, MaskingBudget(), mask_id=6, vocab_size=1000, special_ids=SPECIAL,
                    generator=torch.Generator().manual_seed(3))
    b = mask_tokens(ids, MaskingBudget(), mask_id=6, vocab_size=1000, special_ids=SPECIAL,
                    generator=torch.Generator().manual_seed(3))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
