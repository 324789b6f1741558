"""A local, fsynced spool for events the store could not take; replayed when it is back."""

from __future__ import annotations

import fcntl
import json
import os
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path

from guard._errors import AuditUnavailableError, ConfigError
from guard.audit._checkpoint import Checkpoint, CheckpointKind
from guard.audit._schema import Row


class Spool:
    """An append-only JSON-lines file, locked by one process at a time.

    Args:
        path: The spool file; created (mode 0600) when missing.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self._fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o600)
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as exc:
            os.close(self._fd)
            raise ConfigError(f"audit spool {path} is in use by another process") from exc

    def pending(self) -> bool:
        """True when the spool holds records not yet replayed."""
        return os.fstat(self._fd).st_size > 0

    def append(self, rows: Sequence[Row], checkpoints: Sequence[Checkpoint]) -> None:
        """Append records and fsync; raise AuditUnavailableError if the disk refuses."""
        lines = [json.dumps({"event": list(r)}, separators=(",", ":")) for r in rows]
        lines += [json.dumps({"checkpoint": asdict(c)}, separators=(",", ":")) for c in checkpoints]
        data = ("\n".join(lines) + "\n").encode()
        try:
            os.write(self._fd, data)
            os.fsync(self._fd)
        except OSError as exc:
            raise AuditUnavailableError(
                f"audit spool {self.path} refused the write: {exc}"
            ) from exc

    def read(self) -> tuple[list[Row], list[Checkpoint]]:
        """Every complete record in the spool (a torn last line was never acknowledged)."""
        rows: list[Row] = []
        checkpoints: list[Checkpoint] = []
        with open(self.path, "rb") as handle:
            for raw in handle:
                if not raw.endswith(b"\n"):
                    break
                try:
                    record = json.loads(raw)
                except ValueError:
                    continue
                if "event" in record:
                    rows.append(tuple(record["event"]))
                elif "checkpoint" in record:
                    data = record["checkpoint"]
                    data["kind"] = CheckpointKind(data["kind"])
                    checkpoints.append(Checkpoint(**data))
        return rows, checkpoints

    def clear(self) -> None:
        """Empty the spool after a successful replay."""
        os.ftruncate(self._fd, 0)
        os.fsync(self._fd)

    def close(self) -> None:
        """Release the lock."""
        os.close(self._fd)
