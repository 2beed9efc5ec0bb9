"""Where the run is in its prepared data: rows are read in order and wrap around like an infinite loader
(recipe §2.5: sequential reading of the sorted data, restarting at the end). A trainer part."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol

import numpy as np


class RowSource(Protocol):
    """What the cursor reads: a prepared-data folder (`PreparedData`), or `cram bench`'s rows in memory."""

    path: Path
    num_rows: int

    def rows(self, start: int, count: int) -> np.ndarray: ...


class DataCursor:
    def __init__(self, data: RowSource, rows_per_step: int) -> None:
        self.data = data
        self.rows_per_step = rows_per_step
        self.position = 0

    def next_rows(self, offset: int = 0, count: int | None = None) -> np.ndarray:
        """Rows [offset, offset + count) of the next global micro-batch (all of it by default), then move past
        the whole micro-batch: under DDP each rank reads only its own slice."""
        count = self.rows_per_step - offset if count is None else count
        rows = self._rows((self.position + offset) % self.data.num_rows, count)
        self.position = (self.position + self.rows_per_step) % self.data.num_rows
        return rows

    def _rows(self, start: int, count: int) -> np.ndarray:
        n = self.data.num_rows
        if start + count <= n:
            return self.data.rows(start, count)
        head = self.data.rows(start, n - start)
        return np.concatenate([head, self._rows(0, count - (n - start))])

    def state_dict(self) -> dict[str, Any]:
        return {"position": self.position, "num_rows": self.data.num_rows}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state["num_rows"] != self.data.num_rows:
            raise ValueError(f"the run read data of {state['num_rows']} rows; {self.data.path} has "
                             f"{self.data.num_rows}. Resume with the same --data")
        self.position = int(state["position"])
