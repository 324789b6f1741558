"""The audit relay's wire format: length-prefixed ``marshal`` frames on a Unix socket.

A client sends ``(msg_id, op, payload)``; the relay answers with frames holding
a list of ``(msg_id, error, payload)`` acknowledgements. ``marshal`` handles
only plain values (no code runs when a frame is read), and the socket is
reachable only by the user who started the relay.
"""

from __future__ import annotations

import marshal
import struct
from operator import attrgetter
from typing import Any

from guard.audit._event import FIELD_NAMES, AuditEvent, EventKind

RECORD, POST, BUILD, BUILD_POST, FLUSH, READY, WRITER = range(7)
"""Operations: record an event and acknowledge once durable; record it without
acknowledgement; build an event from ``(kind, fields)`` with the relay's
pipeline, record it and acknowledge with its id; the same without
acknowledgement; flush the relay's trail; ask whether it can record; ask for
its chain id."""

_HEADER = struct.Struct("!I")
MAX_FRAME = 16 * 1024 * 1024
_values = attrgetter(*FIELD_NAMES)
_KIND = FIELD_NAMES.index("kind")


class WireError(Exception):
    """A frame that is not what the protocol allows."""


def frame(message: Any) -> bytes:
    """One frame: a 4-byte big-endian length, then the marshalled message."""
    data = marshal.dumps(message)
    return _HEADER.pack(len(data)) + data


def event_to_wire(event: AuditEvent) -> tuple[Any, ...]:
    """The event as a tuple of plain values, in :data:`FIELD_NAMES` order."""
    values = list(_values(event))
    values[_KIND] = event.kind.value
    return tuple(values)


def event_from_wire(values: object) -> AuditEvent:
    """Rebuild an event from :func:`event_to_wire` output.

    Raises:
        WireError: not a tuple of the event's fields.
    """
    if not isinstance(values, tuple) or len(values) != len(FIELD_NAMES):
        raise WireError("an event must be a tuple of its fields")
    try:
        fields = list(values)
        fields[_KIND] = EventKind(fields[_KIND])
        return AuditEvent(*fields)
    except (TypeError, ValueError) as exc:
        raise WireError(f"not an audit event: {exc}") from None


class FrameReader:
    """Collects bytes from a stream and yields the messages of complete frames."""

    __slots__ = ("_buffer",)

    def __init__(self) -> None:
        self._buffer = bytearray()

    def feed(self, data: bytes) -> list[Any]:
        """Add ``data``; return every message completed by it, in order.

        Raises:
            WireError: a frame is too long or does not unmarshal.
        """
        buffer = self._buffer
        buffer += data
        messages: list[Any] = []
        start, end = 0, len(buffer)
        while end - start >= 4:
            (size,) = _HEADER.unpack_from(buffer, start)
            if size > MAX_FRAME:
                raise WireError(f"frame of {size} bytes is over the limit")
            if end - start - 4 < size:
                break
            try:
                # Frames come only from this user's processes (0600 socket, peer uid checked).
                messages.append(marshal.loads(buffer[start + 4:start + 4 + size]))  # noqa: S302
            except (EOFError, ValueError, TypeError) as exc:
                raise WireError(f"unreadable frame: {exc}") from None
            start += 4 + size
        if start:
            del buffer[:start]
        return messages
