# The embedded OpenAI-compatible server (chat completions, Responses API), profiles and faults.
"""An OpenAI-compatible server on trio + h11 (chat completions and the Responses API, over
HTTP and the Responses API's WebSocket mode), for tests, demos and benchmarks.

``open_simulator`` runs it on a loopback socket; ``X-Simulator-Fault`` headers,
``Simulator.inject_faults`` and ``Simulator.set_models_fault`` script the failures a production
stream meets; ``workers=N`` runs N processes on one port; ``X-Simulator-Reply-Tokens`` or
``reply_tokens=`` ask for exact reply lengths. See ``docs/simulator.md``.
"""

from __future__ import annotations

from ._faults import FAULT_SYNTAX, FaultSpecError
from ._profiles import (
    PROFILES,
    ModelProfile,
    Profile,
    ReplyTokens,
    fast_profile,
    realistic_profile,
)
from ._server import MAX_BODY_BYTES, MAX_HEADER_BYTES, Simulator, open_simulator
from ._stats import SimulatorStats

__all__ = [
    "FAULT_SYNTAX",
    "MAX_BODY_BYTES",
    "MAX_HEADER_BYTES",
    "PROFILES",
    "FaultSpecError",
    "ModelProfile",
    "Profile",
    "ReplyTokens",
    "Simulator",
    "SimulatorStats",
    "fast_profile",
    "open_simulator",
    "realistic_profile",
]
