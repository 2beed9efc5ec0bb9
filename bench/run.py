"""`make bench`: run every benchmark in BENCHMARKS in turn and print its results."""

from __future__ import annotations

import sys
from collections.abc import Callable

from bench import data_bench, pretrain_bench

BENCHMARKS: list[Callable[[], int]] = [data_bench.main, pretrain_bench.main]
"""Each benchmark prints its own report and returns an exit code (0 = passed or skipped)."""


def main() -> int:
    return max((bench() for bench in BENCHMARKS), default=0)


if __name__ == "__main__":
    sys.exit(main())
