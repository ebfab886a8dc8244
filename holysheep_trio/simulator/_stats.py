# The simulator's statistics snapshot, shared by sim.stats() and GET /simulator/stats.
from __future__ import annotations

from collections.abc import Iterable, Mapping
from types import MappingProxyType
from typing import Any

import attrs


def _frozen_counts(value: Mapping[str, int]) -> Mapping[str, int]:
    return MappingProxyType(dict(value))


def _counts() -> Any:
    return attrs.field(factory=dict, converter=_frozen_counts)


@attrs.frozen(kw_only=True)
class SimulatorStats:
    """A snapshot of what the simulator has served (``sim.stats()``).

    Attributes:
        requests: Chat-completion and Responses API requests per model (valid ones that named
            a configured model, including those answered with a fault).
        max_concurrent: Per model, the most such requests ever active at the same time.
        active: Per model, such requests being answered right now.
        open_connections: TCP connections open right now.
        connections_accepted: TCP connections accepted since start (or the last reset).
        prompt_tokens: Prompt (input) tokens billed per model (once a reply starts), chained
            ``previous_response_id`` input included.
        completion_tokens: Completion (output) tokens billed per model: each streamed unit as
            it is sent, hidden reasoning before the first.
        faults_served: How often each fault was applied, by fault name (``"status"``, ``"drip"``).
        total_requests: Every HTTP request parsed, any path and outcome (including stats reads).
        internal_errors: Handler crashes (bugs of the simulator); tests expect 0.
        requests_by_endpoint: Requests that reached an endpoint with a valid key, by endpoint:
            ``"chat"``, ``"responses"``, ``"models"`` (the list and single models, as health
            probes use them), ``"websocket"`` (upgrade requests to the Responses API's
            WebSocket mode).
        websocket_connections: WebSocket connections accepted (upgrades answered with 101).
        open_websockets: WebSocket connections open right now.
        websocket_frames_received: Messages (text or binary) received on WebSocket connections.
        websocket_frames_sent: Event frames sent on WebSocket connections (control frames
            such as pongs and close frames not included).
        websocket_responses: ``response.create`` messages answered on WebSocket connections,
            with a response or an error frame.
        workers: How many simulator processes these counts add up (1 in one process).
    """

    requests: Mapping[str, int] = _counts()
    max_concurrent: Mapping[str, int] = _counts()
    active: Mapping[str, int] = _counts()
    open_connections: int = 0
    connections_accepted: int = 0
    prompt_tokens: Mapping[str, int] = _counts()
    completion_tokens: Mapping[str, int] = _counts()
    faults_served: Mapping[str, int] = _counts()
    total_requests: int = 0
    internal_errors: int = 0
    requests_by_endpoint: Mapping[str, int] = _counts()
    websocket_connections: int = 0
    open_websockets: int = 0
    websocket_frames_received: int = 0
    websocket_frames_sent: int = 0
    websocket_responses: int = 0
    workers: int = 1

    @classmethod
    def combined(cls, snapshots: Iterable[SimulatorStats]) -> SimulatorStats:
        """The sum of several simulators' snapshots (the workers of ``workers=N``).

        Counts and gauges add up, per key for the mappings, and so does ``workers``. For
        ``max_concurrent`` the sum of each worker's maximum is an upper bound of the pool's
        (the maxima may not have happened at the same moment).

        Args:
            snapshots: The snapshots.

        Returns:
            Their sum (an empty snapshot with ``workers=0`` for none).
        """
        totals: dict[str, Any] = {}
        count = 0
        for snapshot in snapshots:
            count += 1
            for field in attrs.fields(cls):
                value = getattr(snapshot, field.name)
                if isinstance(value, Mapping):
                    into = totals.setdefault(field.name, {})
                    for key, number in value.items():
                        into[key] = into.get(key, 0) + number
                else:
                    totals[field.name] = totals.get(field.name, 0) + value
        if not count:
            return cls(workers=0)
        return cls(**totals)

    def to_json(self) -> dict[str, Any]:
        """The snapshot as plain JSON-ready data (what ``GET /simulator/stats`` returns)."""
        return {
            field.name: dict(value) if isinstance(value, Mapping) else value
            for field, value in ((f, getattr(self, f.name)) for f in attrs.fields(SimulatorStats))
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> SimulatorStats:
        """Rebuild a snapshot from :meth:`to_json` data (e.g. a ``/simulator/stats`` body).

        Args:
            data: The decoded JSON object.

        Returns:
            The snapshot.

        Raises:
            ValueError: A field is missing or has the wrong type.
        """
        values: dict[str, Any] = {}
        for field in attrs.fields(cls):
            value = data.get(field.name)
            if field.type in ("int", int):
                if not isinstance(value, int) or isinstance(value, bool):
                    raise ValueError(f"stats field {field.name!r} must be an integer")
            elif not isinstance(value, Mapping) or not all(
                isinstance(k, str) and isinstance(v, int) for k, v in value.items()
            ):
                raise ValueError(f"stats field {field.name!r} must map names to integers")
            values[field.name] = value
        return cls(**values)
