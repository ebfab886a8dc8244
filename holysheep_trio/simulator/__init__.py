# The embedded OpenAI-compatible streaming server with model profiles and scripted faults.
"""An OpenAI-compatible chat-completions server on trio + h11, for tests, demos and benchmarks.

``open_simulator`` runs it on a loopback socket; ``X-Simulator-Fault`` headers or
``Simulator.inject_faults`` script the failures a production stream meets. See
``docs/simulator.md``.
"""

from __future__ import annotations

from ._faults import FAULT_SYNTAX, FaultSpecError
from ._profiles import PROFILES, ModelProfile, Profile, fast_profile, realistic_profile
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
    "Simulator",
    "SimulatorStats",
    "fast_profile",
    "open_simulator",
    "realistic_profile",
]
