"""cram: pretrain a crammed BERT on a fixed compute budget and measure it on GLUE.

`import cramcli` makes transformers' Auto classes know crammed BERT ("cram-bert"): `cramcli.model.register()`
runs as soon as transformers' auto module is imported (at once when it already is). Registering needs torch and
transformers, seconds of imports, so it waits for the moment someone loads them: `import cramcli` and the `cram`
command (`cram --help`) stay fast, and no code decides by how Python was started.
"""

from __future__ import annotations

import importlib.abc
import importlib.util
import sys
from importlib.machinery import ModuleSpec
from types import ModuleType

__version__ = "0.1.0"

_AUTO = "transformers.models.auto"


def _register() -> None:
    import cramcli.model  # noqa: F401  (registering is what importing it does)


class _RegisterAfterAuto(importlib.abc.MetaPathFinder):
    """Finds `transformers.models.auto` through the normal finders and has its loader register crammed BERT
    right after running it (the module keeps its own loader; only that one loader's `exec_module` is wrapped)."""

    def find_spec(self, name: str, path: object = None, target: object = None) -> ModuleSpec | None:
        if name != _AUTO:
            return None
        sys.meta_path.remove(self)  # once, and so the lookup below finds the real module
        spec = importlib.util.find_spec(name)
        loader = spec.loader if spec is not None else None
        if loader is not None and hasattr(loader, "exec_module"):
            run = loader.exec_module

            def exec_module(module: ModuleType) -> None:
                run(module)
                _register()

            loader.exec_module = exec_module  # type: ignore[method-assign]
        return spec


if _AUTO in sys.modules:
    _register()
else:
    sys.meta_path.insert(0, _RegisterAfterAuto())
