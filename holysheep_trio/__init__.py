"""holysheep-trio: a trio-native client for OpenAI-compatible streaming chat APIs.

The SSE parser lives in :mod:`holysheep_trio.sse` and is usable on its own; the embedded
OpenAI-compatible server lives in :mod:`holysheep_trio.simulator`.
"""

from __future__ import annotations

__version__ = "0.1.0.dev0"

__all__ = ["__version__"]
