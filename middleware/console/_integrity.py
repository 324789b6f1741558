"""The integrity view: ``guard.audit.verify`` per writer chain, with when it was checked."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from guard.audit import Store, derive_chain_key, load_public_key, public_key_path, verify
from guard.audit._event import utc_now


@dataclass(frozen=True, slots=True)
class ChainState:
    """One writer's chain: its size, its newest signed checkpoint, and its first problem."""

    writer_id: str
    events: int
    last_seq: int
    checkpoint_kind: str | None
    checkpoint_seq: int | None
    checkpoint_ts: str | None
    problem: str | None
    problem_kind: str | None


@dataclass(frozen=True, slots=True)
class Integrity:
    """The result of one verification run."""

    checked_at: str
    ok: bool
    events: int
    checkpoints: int
    chains: tuple[ChainState, ...]
    notes: tuple[str, ...]
    error: str | None = None


def _int(value: Any) -> int | None:
    """A stored integer, or None for any other value (a tampered row's text or blob)."""
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _attr(obj: Any, name: str, default: Any = None) -> Any:
    """Read a report attribute tolerantly (the verify report may grow or rename fields)."""
    return getattr(obj, name, default)


def check(store: Store, signing_key: Path, hmac_key: bytes | None = None) -> Integrity:
    """Verify every chain against the public key next to ``signing_key``.

    ``hmac_key`` (the subject HMAC key) gives the chain key that keyed chains need.
    """
    checked_at = utc_now()
    try:
        public = load_public_key(public_key_path(signing_key))
    except Exception as exc:  # any failure to load the key is shown
        return Integrity(checked_at, False, 0, 0, (), (), f"cannot load the public key: {exc}")
    chain_key = derive_chain_key(hmac_key) if hmac_key is not None else None
    report = verify(store, public, chain_key=chain_key)
    problems: dict[str, Any] = {}
    for problem in _attr(report, "problems", ()) or ():
        problems.setdefault(str(_attr(problem, "writer_id", "")), problem)
    # Values are read as stored: a tampered row's text or blob is verify's finding, not a crash.
    sizes = {str(w): (int(n), _int(s) or 0) for w, n, s in store.rows(
        "SELECT writer_id, count(*), max(seq) FROM audit_event GROUP BY writer_id")}
    latest: dict[str, tuple[str, int | None, str]] = {}
    for writer, seq, kind, ts in store.rows(
            "SELECT writer_id, seq, kind, ts FROM audit_checkpoint ORDER BY writer_id, seq, ts"):
        latest[str(writer)] = (str(kind), _int(seq), str(ts))
    chains = []
    for writer in sorted(set(sizes) | set(latest) | set(problems)):
        events, last_seq = sizes.get(writer, (0, 0))
        cp = latest.get(writer)
        problem = problems.get(writer)
        chains.append(ChainState(
            writer, events, last_seq,
            cp[0] if cp else None, cp[1] if cp else None, cp[2] if cp else None,
            str(problem) if problem is not None else None,
            str(_attr(problem, "kind", "problem")) if problem is not None else None))
    ok = bool(_attr(report, "ok", not problems))
    unread = "; ".join(str(part) for part in _attr(report, "unread", ()) or ())
    return Integrity(checked_at, ok and not unread, int(_attr(report, "events", 0)),
                     int(_attr(report, "checkpoints", 0)), tuple(chains),
                     tuple(str(n) for n in (_attr(report, "notes", ()) or ())),
                     f"not finished, check again: {unread}" if ok and unread else None)
