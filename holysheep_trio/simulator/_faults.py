# Fault specs: the parser for X-Simulator-Fault / inject_faults and the plan a request follows.
from __future__ import annotations

import math
from collections.abc import Callable

import attrs

#: One line per fault, shown in every "unknown fault" error so a user can fix the spec at once.
FAULT_SYNTAX = (
    "status=CODE[;retry_after=S][;retry_after_ms=MS][;should_retry=true|false]",
    "disconnect_after=N",
    "stall_after=N[;seconds=S]",
    "keepalive_after=N[;every=S]",
    "malformed_after=N",
    "error_event_after=N[;status=CODE]",
    "failed_after=N",
    "reset",
    "drip",
    "oversized_event[;size=BYTES]",
    "slow_headers=S",
    "drop_after_frames=N",
    "ignore_pings[;after=S]",
    "frame_delay=S",
)
#: Faults of a WebSocket connection as a whole (its upgrade request's header or
#: ``inject_faults(..., endpoint="websocket")``); an HTTP request naming one gets a 400.
WEBSOCKET_ONLY = ("drop_after_frames", "ignore_pings", "frame_delay")

_DEFAULT_STALL_SECONDS = 10.0
_DEFAULT_KEEPALIVE_EVERY = 5.0
_DEFAULT_OVERSIZED_BYTES = 4 * 1024 * 1024
_MAX_OVERSIZED_BYTES = 64 * 1024 * 1024


class FaultSpecError(ValueError):
    """A fault spec names an unknown fault or carries a bad parameter.

    The message names the valid faults; the HTTP server answers it with a 400.
    """

    def __init__(self, problem: str) -> None:
        super().__init__(f"{problem}; valid faults: {', '.join(FAULT_SYNTAX)}")


@attrs.frozen(kw_only=True)
class FaultPlan:
    """What one request must suffer; ``None``/``False`` means the fault is off.

    Counts (``*_after``) are units already sent: content chunks of chat completions (the
    role-only first chunk does not count), delta events of the Responses API. A count beyond
    the reply's length fires after the last unit.
    """

    status: int | None = None
    retry_after: str | None = None
    retry_after_ms: str | None = None
    should_retry: bool | None = None
    disconnect_after: int | None = None
    stall_after: int | None = None
    stall_seconds: float = _DEFAULT_STALL_SECONDS
    keepalive_after: int | None = None
    keepalive_every: float = _DEFAULT_KEEPALIVE_EVERY
    malformed_after: int | None = None
    error_event_after: int | None = None
    error_event_status: int = 500
    failed_after: int | None = None
    reset: bool = False
    drip: bool = False
    oversized_event: int | None = None
    slow_headers: float | None = None
    drop_after_frames: int | None = None
    ignore_pings: bool = False
    ignore_pings_after: float = 0.0
    frame_delay: float | None = None

    @property
    def names(self) -> tuple[str, ...]:
        """The names of the faults that are on, in a fixed order."""
        on = {
            "status": self.status is not None,
            "disconnect_after": self.disconnect_after is not None,
            "stall_after": self.stall_after is not None,
            "keepalive_after": self.keepalive_after is not None,
            "malformed_after": self.malformed_after is not None,
            "error_event_after": self.error_event_after is not None,
            "failed_after": self.failed_after is not None,
            "reset": self.reset,
            "drip": self.drip,
            "oversized_event": self.oversized_event is not None,
            "slow_headers": self.slow_headers is not None,
            "drop_after_frames": self.drop_after_frames is not None,
            "ignore_pings": self.ignore_pings,
            "frame_delay": self.frame_delay is not None,
        }
        return tuple(name for name, active in on.items() if active)

    def merged_with(self, other: FaultPlan) -> FaultPlan:
        """This plan with every fault that is on in ``other`` taken from ``other``.

        Args:
            other: The plan whose faults win.

        Returns:
            The combined plan.
        """
        changes: dict[str, object] = {}
        for name in other.names:
            for field in _FIELDS_OF[name]:
                changes[field] = getattr(other, field)
        return attrs.evolve(self, **changes)  # type: ignore[arg-type]

    def fault_points(self, total: int) -> list[int]:
        """The unit counts, in order, after which a stream fault fires in a reply of ``total``
        units (counts beyond the reply fire after its last unit)."""
        return sorted(
            {
                min(count, total)
                for count in (
                    self.disconnect_after,
                    self.stall_after,
                    self.keepalive_after,
                    self.malformed_after,
                    self.error_event_after,
                    self.failed_after,
                )
                if count is not None
            }
        )

    def due_at(self, sent: int, total: int) -> set[str]:
        """The stream faults that fire after ``sent`` of ``total`` units, by name."""
        return {
            name
            for name, count in (
                ("stall_after", self.stall_after),
                ("malformed_after", self.malformed_after),
                ("error_event_after", self.error_event_after),
                ("failed_after", self.failed_after),
                ("keepalive_after", self.keepalive_after),
                ("disconnect_after", self.disconnect_after),
            )
            if count is not None and min(count, total) == sent
        }


NO_FAULTS = FaultPlan()

# fault name -> the FaultPlan fields it sets (used to merge plans)
_FIELDS_OF: dict[str, tuple[str, ...]] = {
    "status": ("status", "retry_after", "retry_after_ms", "should_retry"),
    "disconnect_after": ("disconnect_after",),
    "stall_after": ("stall_after", "stall_seconds"),
    "keepalive_after": ("keepalive_after", "keepalive_every"),
    "malformed_after": ("malformed_after",),
    "error_event_after": ("error_event_after", "error_event_status"),
    "failed_after": ("failed_after",),
    "reset": ("reset",),
    "drip": ("drip",),
    "oversized_event": ("oversized_event",),
    "slow_headers": ("slow_headers",),
    "drop_after_frames": ("drop_after_frames",),
    "ignore_pings": ("ignore_pings", "ignore_pings_after"),
    "frame_delay": ("frame_delay",),
}


def _count(name: str, text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise FaultSpecError(f"{name} needs a whole number of chunks, got {text!r}") from None
    if value < 0:
        raise FaultSpecError(f"{name} must be >= 0, got {value}")
    return value


def _seconds(name: str, text: str, *, allow_zero: bool = True) -> float:
    try:
        value = float(text)
    except ValueError:
        raise FaultSpecError(f"{name} needs a number of seconds, got {text!r}") from None
    if not math.isfinite(value) or value < 0 or (value == 0 and not allow_zero):
        raise FaultSpecError(f"{name} must be a finite number {'>=' if allow_zero else '>'} 0")
    return value


def _status(name: str, text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise FaultSpecError(f"{name} needs an HTTP status code, got {text!r}") from None
    if not 400 <= value <= 599:
        raise FaultSpecError(f"{name} must be an error status in 400..599, got {value}")
    return value


def _number_text(name: str, text: str) -> str:
    value = _seconds(name, text)
    return str(int(value)) if value.is_integer() else repr(value)


def _boolean(name: str, text: str) -> bool:
    lowered = text.lower()
    if lowered not in ("true", "false"):
        raise FaultSpecError(f"{name} must be true or false, got {text!r}")
    return lowered == "true"


def _interval(name: str, text: str) -> float:
    return _seconds(name, text, allow_zero=False)


def _size(name: str, text: str) -> int:
    value = _count(name, text)
    if not 1 <= value <= _MAX_OVERSIZED_BYTES:
        raise FaultSpecError(f"{name} must be in 1..{_MAX_OVERSIZED_BYTES}, got {value}")
    return value


_Parser = Callable[[str, str], object]

# fault name -> (value field or None for a flag, {param: (field, parser)})
_GRAMMAR: dict[str, tuple[tuple[str, _Parser] | None, dict[str, tuple[str, _Parser]]]] = {
    "status": (
        ("status", _status),
        {
            "retry_after": ("retry_after", _number_text),
            "retry_after_ms": ("retry_after_ms", _number_text),
            "should_retry": ("should_retry", _boolean),
        },
    ),
    "disconnect_after": (("disconnect_after", _count), {}),
    "stall_after": (("stall_after", _count), {"seconds": ("stall_seconds", _seconds)}),
    "keepalive_after": (("keepalive_after", _count), {"every": ("keepalive_every", _interval)}),
    "malformed_after": (("malformed_after", _count), {}),
    "error_event_after": (
        ("error_event_after", _count),
        {"status": ("error_event_status", _status)},
    ),
    "failed_after": (("failed_after", _count), {}),
    "reset": (None, {}),
    "drip": (None, {}),
    "oversized_event": (None, {"size": ("oversized_event", _size)}),
    "slow_headers": (("slow_headers", _seconds), {}),
    "drop_after_frames": (("drop_after_frames", _count), {}),
    "ignore_pings": (None, {"after": ("ignore_pings_after", _seconds)}),
    "frame_delay": (("frame_delay", _seconds), {}),
}

# faults that take no value -> (field, value when on)
_FLAG_DEFAULTS: dict[str, tuple[str, object]] = {
    "reset": ("reset", True),
    "drip": ("drip", True),
    "oversized_event": ("oversized_event", _DEFAULT_OVERSIZED_BYTES),
    "ignore_pings": ("ignore_pings", True),
}


def parse_faults(spec: str) -> FaultPlan:
    """Parse a fault spec: comma-separated faults, each ``name[=value][;param=value]...``.

    Args:
        spec: The ``X-Simulator-Fault`` header value or one ``inject_faults`` argument. Empty
            means no fault.

    Returns:
        The plan.

    Raises:
        FaultSpecError: An unknown fault or parameter, a missing or bad value, or a fault named
            twice.
    """
    fields: dict[str, object] = {}
    seen: set[str] = set()
    for item in spec.split(","):
        item = item.strip()
        if not item:
            continue
        head, *params = (part.strip() for part in item.split(";"))
        name, has_value, value = (part.strip() for part in head.partition("="))
        if name not in _GRAMMAR:
            raise FaultSpecError(f"unknown fault {name!r}")
        if name in seen:
            raise FaultSpecError(f"fault {name!r} given twice")
        seen.add(name)
        value_field, param_grammar = _GRAMMAR[name]
        if value_field is None:
            if has_value:
                raise FaultSpecError(f"fault {name!r} takes no value")
            field, default = _FLAG_DEFAULTS[name]
            fields[field] = default
        else:
            if not has_value or not value:
                raise FaultSpecError(f"fault {name!r} needs a value")
            field, parse = value_field
            fields[field] = parse(name, value)
        for param in params:
            key, has_param_value, param_value = (part.strip() for part in param.partition("="))
            if key not in param_grammar:
                raise FaultSpecError(f"unknown parameter {key!r} for fault {name!r}")
            if not has_param_value or not param_value:
                raise FaultSpecError(f"parameter {key!r} of fault {name!r} needs a value")
            field, parse = param_grammar[key]
            fields[field] = parse(key, param_value)
    return FaultPlan(**fields)  # type: ignore[arg-type]
