"""holysheep-trio: a trio-native client for OpenAI-compatible streaming chat APIs.

The SSE parser lives in :mod:`holysheep_trio.sse` and is usable on its own; the embedded
OpenAI-compatible server lives in :mod:`holysheep_trio.simulator`.

Public names are imported lazily (PEP 562), so that ``import holysheep_trio.sse`` stays free of
trio and httpx2: importing a submodule always runs this file first.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0.dev0"

if TYPE_CHECKING:
    pass  # the client issue adds: from .client import open_client, ...

# public name -> module that defines it
_LAZY: dict[str, str] = {}

__all__ = sorted(["__version__", *_LAZY])


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'holysheep_trio' has no attribute {name!r}")
    value = getattr(importlib.import_module(module, __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY})
