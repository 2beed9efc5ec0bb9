"""cram: pretrain a crammed BERT on a fixed compute budget and measure it on GLUE.

`import cramcli` registers crammed BERT ("cram-bert") with transformers' Auto classes by importing
`cramcli.model` (which registers them), at the price of importing torch and transformers (seconds).
The `cram` command itself (`cram ...`, `python -m cramcli ...`) skips that here so `cram --help` stays fast;
its stages import `cramcli.model`, and so register, when they use the model.
"""

from __future__ import annotations

import sys
from pathlib import Path

__version__ = "0.1.0"


def _started_as_cram_command() -> bool:
    """True in the `cram` console script and under `python [options] -m cramcli`."""
    argv = list(getattr(sys, "orig_argv", []))
    ran_module = "-m" in argv[:-1] and argv[argv.index("-m") + 1] == "cramcli"
    return ran_module or Path(sys.argv[0]).stem == "cram"


if not _started_as_cram_command():
    import cramcli.model  # noqa: F401  (registers the Auto classes)
