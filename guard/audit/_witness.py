"""The checkpoint witness: every committed checkpoint, one JSON line each, fsynced, in a
file outside the store's reach (another volume or host, ``chattr +a``), so that whoever
can rewrite the store cannot also delete the checkpoints covering the newest events."""

from __future__ import annotations

import errno
import json
import os
import stat
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from guard._errors import ConfigError
from guard.audit._checkpoint import Checkpoint, CheckpointKind
from guard.audit._journal import fsync_dir


class Witness:
    """Appends signed checkpoints to the file ``path`` (created on first use, never rewritten)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            created = not os.path.lexists(path)
            # O_NOFOLLOW: a link planted in the witness's folder never makes the guard
            # append to a file it names (a key, the journal), as for the journal's files
            self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_NOFOLLOW
                               | os.O_CLOEXEC, 0o644)
            self._regular = stat.S_ISREG(os.fstat(self._fd).st_mode)
            if created:
                fsync_dir(path.parent)
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise ConfigError(f"audit witness {path} is a symbolic link; the guard follows "
                                  "none (name the file itself in audit.witness)") from exc
            raise ConfigError(f"cannot open the audit witness {path}: {exc.strerror}") from exc

    def publish(self, checkpoints: Sequence[Checkpoint]) -> None:
        """Append checkpoints (oldest first) in one write and fsync them.

        A pipe, FIFO or device that cannot be synced (EINVAL, EROFS) has them once
        written. OSError: the file refused them (the caller keeps them for a retry).
        """
        data = "".join(json.dumps(asdict(cp), separators=(",", ":"), sort_keys=True) + "\n"
                       for cp in checkpoints).encode()
        while data:
            data = data[os.write(self._fd, data):]
        try:
            os.fsync(self._fd)
        except OSError as exc:
            if self._regular or exc.errno not in (errno.EINVAL, errno.EROFS):
                raise

    def close(self) -> None:
        os.close(self._fd)


MAX_WITNESS_LINE = 64 * 1024
"""The longest witness line read (a checkpoint's is a few hundred bytes); a longer one is
a bad line, skipped without being held, so a planted line cannot fill the reader's memory."""


@dataclass(frozen=True, slots=True)
class WitnessRead:
    """A witness file's checkpoints, and the numbers of its lines that are not checkpoints."""

    checkpoints: tuple[Checkpoint, ...]
    bad_lines: tuple[int, ...]


def read_witness(path: Path) -> WitnessRead:
    """Every checkpoint in the witness file ``path`` (a torn last line is skipped; ConfigError:
    the file cannot be read)."""
    checkpoints: list[Checkpoint] = []
    bad: list[int] = []
    try:
        handle = path.open("rb")
    except OSError as exc:
        raise ConfigError(f"cannot read the audit witness {path}: {exc.strerror}") from exc
    with handle:
        number = 0
        while raw := handle.readline(MAX_WITNESS_LINE + 1):
            number += 1
            if len(raw) > MAX_WITNESS_LINE:  # no checkpoint: skip it, never hold it whole
                bad.append(number)
                while not raw.endswith(b"\n") and (raw := handle.readline(MAX_WITNESS_LINE)):
                    pass  # the rest of the line (a line just past the bound has none)
                continue
            if not raw.endswith(b"\n"):
                break  # torn by a crash while appending: never covered anything
            try:
                data = json.loads(raw)
                data["kind"] = CheckpointKind(data["kind"])
                cp = Checkpoint(**data)
                if not cp.well_typed():
                    raise TypeError("a field of the wrong type")
            except (ValueError, TypeError, KeyError):
                bad.append(number)
            else:
                checkpoints.append(cp)
    return WitnessRead(tuple(checkpoints), tuple(bad))
