"""The micro-step feed under data parallelism: each rank reads only its rows, masks equal one process's."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

from cramcli import budgets
from cramcli.data.prepared import PreparedData
from cramcli.data.tokenizer import special_ids
from cramcli.train.data_cursor import DataCursor
from cramcli.train.feed import BatchFeed

sys.path.insert(0, str(Path(__file__).parent))
from pretrain_helpers import write_prepared  # noqa: E402


@pytest.mark.parametrize("preset", ["24", "v2"])  # Bernoulli and exact masking
def test_each_rank_reads_only_its_rows_and_gets_one_process_masks(tmp_path: Path, monkeypatch, preset: str) -> None:
    # 20 rows and global micro-batches of 8: the third micro-step wraps around the end of the data
    data = PreparedData(write_prepared(tmp_path / "data", rows=20))
    special, masking = special_ids(data.tokenizer_path), budgets.load("train", preset).masking
    reads: list[tuple[int, int]] = []
    rows = PreparedData.rows

    def recording(self: PreparedData, start: int, count: int):
        reads.append((start, count))
        return rows(self, start, count)

    def feeds(world: int) -> list[BatchFeed]:
        return [BatchFeed(DataCursor(data, 8), masking, data.vocab_size, special, torch.device("cpu"),
                          micro_batch_size=8 // world, rank=rank, world=world, seed=3) for rank in range(world)]

    one, (first, second) = feeds(1)[0], feeds(2)
    for step in range(4):
        inputs, labels = one.next(step)
        monkeypatch.setattr(PreparedData, "rows", recording)
        parts = [feed.next(step) for feed in (first, second)]
        monkeypatch.setattr(PreparedData, "rows", rows)
        assert sum(count for _, count in reads) == 8  # 4 rows each, not the whole micro-batch twice
        reads.clear()
        torch.testing.assert_close(torch.cat([p[0] for p in parts]), inputs, rtol=0, atol=0)
        torch.testing.assert_close(torch.cat([p[1] for p in parts]), labels, rtol=0, atol=0)
        assert (labels != -100).any()
    assert first.cursor.state_dict() == second.cursor.state_dict() == one.cursor.state_dict()
