# The contract between a wire format's event generator and the server's pacing loop (pure).
"""A stream is a sequence of frames, some of which are *units* (one completion token each).

The server paces units, counts them for faults (``disconnect_after=N`` fires after N units)
and bills them; it never needs to know what the frames say. A wire format gives it a
:class:`FrameSource`: frames before the time to first token (``head``), frames up to the first
unit (``opening``), the units in batches (``take``), and the frames after the last unit
(``closing``), plus the frames a fault injects (an in-band error, a failed terminal event, a
malformed event, an oversized one).

:class:`UnitFrames` builds one from any generator of ``(frame, is_unit)`` pairs and an encoder
that turns frames into bytes, so a wire format writes its event order as one straight generator
function, and a different encoder (SSE bytes today, WebSocket frames later) reuses it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Generic, Protocol, TypeVar

Frame = TypeVar("Frame")


class FrameSource(Protocol):
    """What the server's streaming loop needs from a wire format (all bytes, ready to send).

    Attributes:
        units: How many units ``take`` will yield in all.
        hidden_tokens: Tokens never shown (hidden reasoning) that take time at the model's
            rate before the opening.
        billed_hidden: Hidden tokens billed before the first unit (``n`` chat choices think
            in parallel: the time is the longest one's, the bill everyone's).
    """

    units: int
    hidden_tokens: int
    billed_hidden: int

    def head(self) -> bytes:
        """Frames sent at once, before the time to first token (may be empty)."""
        ...

    def opening(self) -> bytes:
        """Frames up to, not including, the first unit."""
        ...

    def take(self, limit: int) -> tuple[bytes, int]:
        """The next 1..``limit`` units, with any frames between them; the bytes end right
        after the last unit. Only called while units remain."""
        ...

    def closing(self) -> bytes:
        """Every frame after the last unit (the terminal events)."""
        ...

    def error_event(self, status: int) -> bytes:
        """An in-band error event typed like the HTTP error ``status``; ends the stream."""
        ...

    def failed_event(self) -> bytes:
        """The wire format's failed terminal event; ends the stream."""
        ...

    def malformed(self) -> bytes:
        """One event whose data is not valid JSON."""
        ...

    def oversized(self, size: int) -> bytes:
        """One valid event carrying ``size`` bytes of padding."""
        ...


class UnitFrames(Generic[Frame]):
    """Cuts a generator of ``(frame, is_unit)`` pairs into a stream's phases.

    Frames are encoded only when they are handed out, so an encoder that stamps sequence
    numbers (the Responses API) numbers exactly what is sent, in order.

    Args:
        frames: The generator, in wire order.
        units: How many of its frames are units.
        encode: Turns a list of frames into bytes.
        head_frames: How many leading frames belong to :meth:`head`.
    """

    def __init__(
        self,
        frames: Iterator[tuple[Frame, bool]],
        *,
        units: int,
        encode: Callable[[list[Frame]], bytes],
        head_frames: int = 0,
    ) -> None:
        self._frames = frames
        self._encode = encode
        self._head_frames = head_frames
        self._pending: list[Frame] = []
        self.units = units
        self.hidden_tokens = 0
        self.billed_hidden = 0

    def head(self) -> bytes:
        head = []
        for _ in range(self._head_frames):
            frame = next(self._frames, None)
            if frame is None:
                break
            head.append(frame[0])
        return self._encode(head) if head else b""

    def opening(self) -> bytes:
        frames: list[Frame] = []
        for frame, unit in self._frames:
            if unit:
                # Held back, not encoded: it goes out with the first `take`, after any fault
                # that fires before the first unit.
                self._pending.append(frame)
                break
            frames.append(frame)
        return self._encode(frames) if frames else b""

    def take(self, limit: int) -> tuple[bytes, int]:
        frames = self._pending
        self._pending = []
        count = len(frames)
        while count < limit:
            frame, unit = next(self._frames)
            frames.append(frame)
            count += unit
        return self._encode(frames), count

    def closing(self) -> bytes:
        frames = [*self._pending, *(frame for frame, _ in self._frames)]
        self._pending = []
        return self._encode(frames) if frames else b""
