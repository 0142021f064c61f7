"""Copy a Ray job's log from Ray's Jobs API into a job's store, a piece at a time.

Ray's ``GET /api/jobs/{submission_id}/logs`` answers the whole log as one JSON document,
``{"logs": "..."}``, and has no way to ask for a part of it. Runners poll it (the local
supervisor, the KubeRay follower), and a job may print gigabytes: so the answer is never
read whole. :func:`copy_log` reads the response in blocks, decodes the JSON string as it
comes (``json`` on each block, cut where no escape is split), skips the bytes copied by an
earlier read and hands the rest on in pieces. What it holds at any time is a block or two.

No ``ray`` import: runners on any machine use it, with whatever HTTP client reached the
dashboard (only ``read(n)`` of the response is used).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Protocol

#: Bytes read from the response at a time.
READ_BYTES = 64 * 1024
#: Bytes handed to ``write`` at most at a time.
WRITE_BYTES = 1 << 20

#: The start of Ray's answer, up to the opening quote of the log's string (or its ``null``).
_PREFIX = re.compile(rb'\s*\{\s*"logs"\s*:\s*(?:(")|(null))')
#: How far into the answer the log's string must have started.
_PREFIX_MAX = 256


class Readable(Protocol):
    def read(self, size: int = -1, /) -> bytes: ...


class LogFormatError(ValueError):
    """The answer is not Ray's ``{"logs": "..."}``."""


def _safe_end(raw: bytes | bytearray) -> int:
    """Where ``raw`` (the inside of a JSON string, not ending it) may be cut: never inside an
    escape sequence, between the two halves of an escaped surrogate pair, or inside a UTF-8
    character (Ray escapes every non-ASCII one, but a proxy need not)."""
    n = _escape_safe_end(raw)
    lead = n - 1
    while lead >= max(0, n - 4) and 0x80 <= raw[lead] < 0xC0:
        lead -= 1
    if lead >= 0 and raw[lead] >= 0xC0:
        length = 2 if raw[lead] < 0xE0 else 3 if raw[lead] < 0xF0 else 4
        if n - lead < length:
            return lead
    return n


def _escape_safe_end(raw: bytes | bytearray) -> int:
    n = len(raw)
    cut = n
    last = raw.rfind(b"\\", max(0, n - 12))
    if (
        last >= 0
        and _starts_escape(raw, last)
        and (last + 1 >= n or (raw[last + 1] == 0x75 and last + 6 > n))
    ):
        cut = last  # an escape not complete yet
    high = cut - 6  # a high surrogate just before may pair with what comes next
    if high >= 0 and raw[high + 1] == 0x75 and _starts_escape(raw, high):
        try:
            unit = int(raw[high + 2 : high + 6], 16)
        except ValueError:
            return cut  # not valid JSON: json.loads says so
        if 0xD800 <= unit <= 0xDBFF:
            return high
    return cut


def _starts_escape(raw: bytes | bytearray, at: int) -> bool:
    """Whether the backslash at ``at`` starts an escape (not the second half of ``\\\\``)."""
    run = 0
    while at - run >= 0 and raw[at - run] == 0x5C:
        run += 1
    return run % 2 == 1


def _string_end(raw: bytes | bytearray, start: int) -> int:
    """The index of the quote that ends the JSON string ``raw`` is inside of, or -1."""
    at = start
    while True:
        quote = raw.find(b'"', at)
        if quote < 0:
            return -1
        run = 0
        while quote - run - 1 >= 0 and raw[quote - run - 1] == 0x5C:
            run += 1
        if run % 2 == 0:
            return quote
        at = quote + 1


def copy_log(response: Readable, skip: int, write: Callable[[bytes], None]) -> int:
    """Stream Ray's ``{"logs": "..."}`` answer: the log's UTF-8 bytes after the first ``skip``
    go to ``write`` (in pieces of at most :data:`WRITE_BYTES`); returns the log's length in bytes.

    LogFormatError if the answer is not Ray's; the caller's HTTP errors pass through. What was
    written before an error stays written: the caller counts it with ``write``.
    """
    buffer = bytearray()
    while True:  # up to the log's string
        block = response.read(READ_BYTES)
        buffer += block
        match = _PREFIX.match(buffer)
        if match:
            break
        if not block or len(buffer) > _PREFIX_MAX:
            raise LogFormatError(f"not a Ray job log answer: {bytes(buffer[:80])!r}")
    if match.group(2):  # "logs": null
        return 0
    del buffer[: match.end()]
    total = 0
    pending = bytearray()  # decoded bytes not written yet

    def emit(data: bytes, final: bool = False) -> None:
        nonlocal total
        start = total
        total += len(data)
        if total <= skip:
            return
        pending.extend(data[max(0, skip - start) :])
        while len(pending) >= WRITE_BYTES or (final and pending):
            piece = bytes(pending[:WRITE_BYTES])
            del pending[:WRITE_BYTES]
            write(piece)

    def decode(raw: bytes | bytearray) -> bytes:
        try:
            text = json.loads(b'"' + bytes(raw) + b'"')
        except ValueError as e:
            raise LogFormatError(f"not a Ray job log answer: {e}") from e
        return str(text).encode("utf-8", errors="replace")

    while True:  # the buffer starts at an escape's start (or a character): never inside one
        end = _string_end(buffer, 0)
        if end >= 0:
            emit(decode(buffer[:end]), final=True)
            return total
        cut = _safe_end(buffer)
        if cut:
            emit(decode(buffer[:cut]))
            del buffer[:cut]  # what is left is a split escape: at most 11 bytes
        block = response.read(READ_BYTES)
        if not block:
            raise LogFormatError("the Ray job log answer ended inside the log")
        buffer += block
