"""cram: pretrain a crammed BERT on a fixed compute budget and measure it on GLUE.

`import cramcli` makes transformers' Auto classes know crammed BERT ("cram-bert"). Importing transformers and
torch costs seconds, which `cram --help` must not pay, so the registration runs when transformers itself is
imported (or right away if it already is): a one-shot import hook below.
"""

from __future__ import annotations

import importlib.abc
import importlib.util
import sys
from types import ModuleType
from typing import Any

__version__ = "0.1.0"


def _register() -> None:
    # While cramcli.model is itself being imported (it imports transformers), it registers at its own end.
    if "cramcli.model" not in sys.modules:
        import cramcli.model  # noqa: F401  (registers on import)


class _RegisterOnTransformersImport(importlib.abc.MetaPathFinder):
    def find_spec(self, name: str, path: Any = None, target: Any = None) -> Any:
        if name != "transformers":
            return None
        sys.meta_path.remove(self)  # one shot; let the normal finders locate the package
        spec = importlib.util.find_spec(name)
        if spec is None or spec.loader is None:
            return spec
        loader, exec_module = spec.loader, spec.loader.exec_module

        def exec_then_register(module: ModuleType) -> None:
            exec_module(module)
            _register()

        loader.exec_module = exec_then_register  # type: ignore[method-assign]
        return spec


if "transformers" in sys.modules:
    _register()
elif not any(isinstance(f, _RegisterOnTransformersImport) for f in sys.meta_path):
    sys.meta_path.insert(0, _RegisterOnTransformersImport())
