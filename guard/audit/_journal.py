"""The audit journal: append-only segment files of checksummed frames, one fdatasync per batch.

A journal is a folder of segments named by the offset (record number) of their
first record (``00000000000000000000.seg``). Each record is one frame::

    length (4 bytes, little endian, never 0) | CRC32C of the payload (4 bytes) | payload

:meth:`Journal.append` writes a whole batch with one ``write`` and one
``fdatasync``. The segment is grown ahead of its records: a batch that passes
the zeros written so far writes :data:`GROW` more zeros behind itself in the
same write, so the next batches overwrite zeros already on disk and their
``fdatasync`` carries no change of the file's size. Zeros where a frame should
start end the segment's records (a length of 0 is never a frame); a segment is
cut to its records when the next one is started and when the journal closes.
After each ``fdatasync`` the journal publishes its durable end (the offset
after the last synced record) in the lane's ``END`` file, updated in place
through a shared mapping and never synced itself: a reader in any process
indexes no record past it, so bytes written but not yet synced are never
indexed. Opening a journal scans the newest segment forward, cuts it at the
first frame that is not whole and good, with the zeros behind it (a torn write
was never acknowledged), syncs what is left and publishes that end again; a bad
frame below the published end was acknowledged, so the journal refuses to open
instead of cutting it off. The segments are the truth; the query index is built
from them (:mod:`guard.audit._indexer`).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import logging
import mmap
import os
import re
import stat
import struct
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from crc32c import crc32c

from guard._errors import AuditUnavailableError, ConfigError

_log = logging.getLogger("guard.audit")
_HEADER = struct.Struct("<II")
_END = struct.Struct("<QQ")  # the durable end and its complement: a torn read never matches
_MASK = (1 << 64) - 1
END = "END"
MAX_FRAME = 16 << 20  # a length field above this is damage, not a record
GROW = 1 << 20  # zeros written ahead of the records when a batch passes them
_ZEROS = bytes(GROW)
SUFFIX = ".seg"


def open_own(path: Path, flags: int, mode: int = 0o600) -> int:
    """``os.open`` of a journal file that is never a symbolic link (ConfigError if it is).

    Whoever can write the audit folder but not the keys must not make the guard
    write, truncate or read another file with the guard's rights.
    """
    try:
        return os.open(path, flags | os.O_NOFOLLOW | os.O_CLOEXEC, mode)
    except OSError as exc:
        if exc.errno != errno.ELOOP:
            raise
    raise ConfigError(f"audit journal {path.parent}: {path.name} is a symbolic link; the guard "
                      "follows none in its journal (remove it)")


def journal_id(folder: Path) -> str:
    """A lane's id (its ``ID`` file, never read through a link): the key of its index offset."""
    fd = open_own(folder / "ID", os.O_RDONLY)
    try:
        return os.read(fd, 256).decode("ascii", "replace").strip()
    finally:
        os.close(fd)


def segment_name(first: int) -> str:
    """The file name of the segment whose first record has offset ``first``."""
    return f"{first:020d}{SUFFIX}"


def segments(folder: Path) -> list[tuple[int, Path]]:
    """The segments of a journal folder as ``(first offset, path)``, oldest first."""
    found = []
    for path in folder.glob(f"*{SUFFIX}"):
        stem = path.name.removesuffix(SUFFIX)
        if stem.isdigit() and len(stem) == 20:
            found.append((int(stem), path))
    return sorted(found)


@dataclass(frozen=True, slots=True)
class Damage:
    """A frame that is incomplete or fails its checksum: where, and why."""

    path: Path
    position: int
    offset: int
    why: str


def _frames(data: bytes, want: int) -> tuple[list[bytes], int, str | None]:
    """The first whole, good frames of ``data`` (at most ``want``).

    Returns their payloads, the bytes they take, and why the parse stopped short
    (:func:`_stop`; None: it did not, or only zeros follow).
    """
    payloads: list[bytes] = []
    pos, end = 0, len(data)
    while pos < end and len(payloads) < want:
        length, crc = _HEADER.unpack_from(data, pos) if end - pos >= _HEADER.size else (0, 0)
        start = pos + _HEADER.size
        payload = data[start:start + length]
        if not length or length > MAX_FRAME or start + length > end or crc32c(payload) != crc:
            return payloads, pos, _stop(data, pos, length)
        payloads.append(payload)
        pos = start + length
    return payloads, pos, None


def _stop(data: bytes, pos: int, length: int) -> str | None:
    """Why no good frame starts at ``pos``: None when only zeros follow, a header's worth at
    least (the grown tail); ``incomplete header`` or ``incomplete frame`` when the bytes
    written end inside it (a write cut short, or a read); else ``checksum mismatch`` (or
    ``zero length``: zeros, then bytes)."""
    written = pos + len(data[pos:].rstrip(b"\0"))
    if written == pos and len(data) - pos >= _HEADER.size:
        return None
    if written - pos < _HEADER.size:
        return "incomplete header"
    if length > MAX_FRAME or pos + _HEADER.size + length > written:
        return "incomplete frame"
    return "checksum mismatch" if length else "zero length"


def open_segment(path: Path) -> int:
    """A segment opened to read: a regular file, never through a link nor a pipe or folder
    put in its place (ConfigError), which would make its reader follow, wait or fail."""
    fd = open_own(path, os.O_RDONLY | os.O_NONBLOCK)
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise ConfigError(f"audit journal {path.parent}: {path.name} is not a regular file")
    return fd


def scan(path: Path, first: int = 0) -> tuple[list[bytes], int, Damage | None]:
    """A segment's good records up to its first bad frame: the payloads, the bytes they
    take, and the damage that ended the scan (None when the segment ends cleanly; a
    segment that is no regular file is damage at its start)."""
    try:
        fd = open_segment(path)
    except ConfigError as exc:
        return [], 0, Damage(path, 0, first, str(exc).rpartition(": ")[2])
    with os.fdopen(fd, "rb") as handle:
        data = handle.read()
    payloads, good, why = _frames(data, len(data))
    return payloads, good, Damage(path, good, first + len(payloads), why) if why else None


def durable_end(folder: Path) -> int:
    """The durable end a journal (one lane) published: no reader goes past it (0: none yet)."""
    try:
        fd = open_own(folder / END, os.O_RDONLY | os.O_NONBLOCK)  # a pipe put there: no wait
    except FileNotFoundError:
        return 0
    except ConfigError as exc:
        raise AuditUnavailableError(str(exc)) from None
    try:
        for _ in range(100):  # a read torn by the writer's update: read again
            data = os.pread(fd, _END.size, 0)
            if len(data) < _END.size:
                return 0
            end, check = _END.unpack(data)
            if end ^ check == _MASK:
                return int(end)
    except OSError as exc:  # a folder or a pipe in its place
        raise AuditUnavailableError(f"audit journal {folder}: {END} cannot be read: "
                                    f"{exc.strerror}") from None
    finally:
        os.close(fd)
    raise AuditUnavailableError(f"audit journal {folder}: {END} does not hold a valid end")


class JournalBusyError(ConfigError):
    """Another process holds the journal folder."""


def lock_folder(folder: Path, name: str, busy: str) -> int:
    """Create ``folder`` (mode 0700) and lock its file ``name`` for this process alone.

    Returns the lock file's descriptor (closing it releases the lock). Raises
    ConfigError when the folder cannot be made or opened, JournalBusyError (message
    ``busy``) when another process holds the lock.
    """
    try:
        folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = open_own(folder / name, os.O_RDWR | os.O_CREAT)
    except OSError as exc:
        raise ConfigError(f"cannot open the audit journal {folder}: {exc.strerror}") from exc
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise JournalBusyError(busy) from None
    return fd


def fsync_dir(folder: Path) -> None:
    """Make a folder's entries (a created or renamed file) durable."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class Journal:
    """The writing end of a journal folder; one process holds it at a time (file lock).

    Args:
        folder: The journal folder (created, mode 0700, when missing).
        segment_bytes: Start a new segment once the current one is this large.
    """

    def __init__(self, folder: Path, *, segment_bytes: int = 64 << 20) -> None:
        self.folder = folder
        self._segment_bytes = max(1, segment_bytes)
        if folder.is_symlink() or (folder.exists() and not stat.S_ISDIR(os.lstat(folder).st_mode)):
            raise ConfigError(f"audit journal {folder} is a symbolic link, not a folder; the "
                              "guard follows none in its journal (remove it)")
        self._lock = lock_folder(folder, "LOCK",
                                 f"audit journal {folder} is in use by another process")
        self.journal_id = self._identity()
        found = segments(folder)
        if not found:
            os.close(self._create(0))
            found = segments(folder)
        first, path = found[-1]
        payloads, good, damage = scan(path, first)
        try:
            published = durable_end(folder)
        except AuditUnavailableError:  # an END no writer completed: none
            published = 0
        if first + len(payloads) < published:  # damaged, cut off or gone
            os.close(self._lock)  # acknowledged records are missing: keep them for inspection
            what = "damaged" if damage is not None else "missing"
            raise AuditUnavailableError(
                f"audit journal {folder}: record {first + len(payloads)} of {path.name} is "
                f"{what} below the durable end {published}; nothing was cut off "
                "(move the lane aside to inspect it, then start again)")
        self._fd = open_own(path, os.O_WRONLY)
        self._size = good  # the records' bytes (the file's, with the zeros ahead: _grown)
        self._cut()  # a torn tail (never acknowledged) and the zeros go
        os.fsync(self._fd)  # whole frames a stopped writer had not synced yet are kept
        self._broken = False
        self._refused: str | None = None  # why every append is refused from now on (refuse)
        self.next_offset = first + len(payloads)  # the next record's; all below is durable
        end = open_own(folder / END, os.O_RDWR | os.O_CREAT)
        try:
            os.ftruncate(end, _END.size)
            self._end = mmap.mmap(end, _END.size)
        finally:
            os.close(end)
        self._publish()

    def _publish(self) -> None:
        """Publish ``next_offset`` as the durable end (a store into the shared mapping)."""
        self._end[:] = _END.pack(self.next_offset, self.next_offset ^ _MASK)

    def _identity(self) -> str:
        """This journal's id (a file in the folder), the key of the index's offset."""
        path = self.folder / "ID"
        if not os.path.lexists(path):
            tmp = self.folder / "ID.tmp"
            fd = open_own(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
            try:
                os.write(fd, (str(uuid.uuid4()) + "\n").encode())
            finally:
                os.close(fd)
            os.replace(tmp, path)
            fsync_dir(self.folder)
        return journal_id(self.folder)

    def _create(self, first: int) -> int:
        path = self.folder / segment_name(first)
        fd = open_own(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL)
        fsync_dir(self.folder)
        return fd

    def append(self, payloads: Sequence[bytes]) -> int:
        """Append records with one write and one fdatasync; return the first one's offset.

        A segment at its size bound is cut to its records and the next one started first.
        AuditUnavailableError: the disk refused, or a record is empty or over
        :data:`MAX_FRAME` (its readers would take it for the end or damage); nothing of
        the batch is kept.
        """
        if self._refused is not None:
            raise AuditUnavailableError(f"audit journal {self.folder}: {self._refused}")
        lengths = list(map(len, payloads))
        if not all(lengths) or max(lengths, default=0) > MAX_FRAME:
            raise AuditUnavailableError(
                f"audit journal {self.folder}: a record is empty or over {MAX_FRAME} bytes")
        try:
            if self._broken:
                self._cut()
                self._broken = False
            if self._size >= self._segment_bytes:
                fd = self._create(self.next_offset)
                self._cut()
                os.close(self._fd)
                self._fd, self._size, self._grown = fd, 0, 0
            parts: list[bytes] = [b""] * (2 * len(payloads))  # header, payload, ...: one join
            parts[::2] = map(_HEADER.pack, lengths, map(crc32c, payloads))
            parts[1::2] = payloads
            data = b"".join(parts)
            view, written = memoryview(data), 0
            while written < len(data):
                written += os.write(self._fd, view[written:])
            end = self._size + written
            if end > self._grown:  # past the zeros: more of them, synced with the batch
                with contextlib.suppress(OSError):  # no room for them: the batch alone
                    self._grown = end + os.pwrite(self._fd, _ZEROS, end)
            os.fdatasync(self._fd)
        except Exception as exc:  # (OSError, or anything else before the sync returned)
            try:  # cut the failed batch off, so the next batch follows the last good one
                self._cut()
            except OSError:
                self._broken = True
            raise AuditUnavailableError(
                f"audit journal {self.folder} refused the write: {exc}") from exc
        first = self.next_offset
        self._size += len(data)
        self.next_offset = first + len(payloads)
        self._publish()
        return first

    def _cut(self) -> None:
        """Cut the segment to its records (the zeros ahead go; the next batch grows it)."""
        os.ftruncate(self._fd, self._size)
        os.lseek(self._fd, self._size, os.SEEK_SET)
        self._grown = self._size

    def refuse(self, why: str) -> None:
        """Refuse every append from now on (``why``), its files left open.

        For a writer that may still be inside an append (a sync that does not return):
        its descriptor stays this segment's until the process ends, so no write of it
        can land in a file opened later under the same number.
        """
        self._refused = why

    def close(self) -> None:
        """Cut the segment to its records; close it and the mapping and release the lock."""
        self._refused = "the journal is closed"
        with contextlib.suppress(OSError):
            self._cut()
        self._end.close()
        os.close(self._fd)
        os.close(self._lock)


class JournalReader:
    """Reads a journal's records in order from an offset (by another thread or process).

    Frames are read in large blocks; bytes past the last whole frame asked for are
    read again next time (they may belong to a batch still being written).

    Args:
        folder: The journal folder.
        offset: The first record to read.
        block: Bytes read at once.
    """

    def __init__(self, folder: Path, offset: int, *, block: int = 1 << 20) -> None:
        self.folder = folder
        self.offset = offset
        self._block = block
        self._file: BinaryIO | None = None
        self._open_at(offset)

    def _open_at(self, offset: int) -> None:
        chosen = None
        if (self.folder / segment_name(offset)).is_file():  # the next one: no folder listing
            chosen = (offset, self.folder / segment_name(offset))
        for first, path in segments(self.folder) if chosen is None else ():
            if first <= offset:
                chosen = (first, path)
        if chosen is None:
            raise ConfigError(f"audit journal {self.folder} has no segment holding {offset}")
        first, path = chosen
        handle = os.fdopen(open_segment(path), "rb", buffering=0)
        skip = offset - first
        while skip:
            header = handle.read(_HEADER.size)
            length = _HEADER.unpack(header)[0] if len(header) == _HEADER.size else 0
            if not length:  # its end, or its zeros
                handle.close()
                raise ConfigError(f"audit journal {self.folder} ends before offset {offset}")
            handle.seek(length, os.SEEK_CUR)
            skip -= 1
        if self._file is not None:
            self._file.close()
        self._file = handle

    def read(self, end: int, limit: int) -> list[bytes]:
        """The records from the current offset up to ``end`` (exclusive), at most ``limit``.

        ``end`` must be at most the published :func:`durable_end` (those frames are whole
        and synced). A bad frame ends the records returned; the next call raises
        AuditUnavailableError on it.
        """
        out: list[bytes] = []
        want = min(end - self.offset, limit)
        size = self._block
        while len(out) < want:
            handle = self._file
            assert handle is not None
            start = handle.tell()
            data = handle.read(size)
            if not data:  # this segment is done: the next one
                self._open_at(self.offset + len(out))
                continue
            got, used, why = _frames(data, want - len(out))
            out += got
            handle.seek(start + used)  # the next read starts after the last frame returned
            if len(out) < want and why is None and used < len(data):  # zeros: its end
                self._open_at(self.offset + len(out))
                continue
            if why is not None and (not why.startswith("incomplete") or len(data) < size
                                    or size > MAX_FRAME):
                break  # a bad frame, or the segment ends inside one
            size = self._block if got else size * 2  # a frame longer than the block
        if len(out) < want and not out:
            raise AuditUnavailableError(
                f"audit journal {self.folder}: bad frame at offset {self.offset}")
        self.offset += len(out)
        return out

    def close(self) -> None:
        """Close the open segment."""
        if self._file is not None:
            self._file.close()


def read_journal(folder: Path) -> Iterator[tuple[int, bytes] | Damage]:
    """Every record of a journal as ``(offset, payload)``; a bad frame yields its Damage.

    A segment's scan stops at its first bad frame; the next segment is read from
    its own first offset.
    """
    for first, path in segments(folder):
        payloads, _good, damage = scan(path, first)
        for index, payload in enumerate(payloads):
            yield first + index, payload
        if damage is not None:
            yield damage


def lanes(folder: Path) -> list[Path]:
    """The journals under ``folder`` (``lane-N``), or ``folder`` itself when it is one."""
    if (folder / "ID").is_file():
        return [folder]
    return sorted(p for p in folder.glob("lane-*") if (p / "ID").is_file())


@dataclass(frozen=True, slots=True)
class Mount:
    """A line of ``/proc/self/mountinfo``: the device (``major:minor``), mount point, type
    and source."""

    device: str
    point: str
    fstype: str
    source: str


def mount_of(mountinfo: str, path: str, dev: int) -> Mount | None:
    """The mount an absolute, resolved ``path`` of device ``dev`` (its ``st_dev``) is on.

    Of the mounts in ``mountinfo`` (the text of ``/proc/self/mountinfo``) whose point
    holds ``path``: that device's with the longest point, the last mounted of equals.
    """
    best: tuple[tuple[bool, int], Mount] | None = None
    for line in mountinfo.splitlines():
        left, _sep, right = line.partition(" - ")
        fields, tail = left.split(), right.split()
        if len(fields) < 6 or len(tail) < 3:
            continue
        point = re.sub(r"\\([0-7]{3})", lambda m: chr(int(m[1], 8)), fields[4])
        if path != point and not path.startswith(point.rstrip("/") + "/"):
            continue
        key = (fields[2] == f"{os.major(dev)}:{os.minor(dev)}", len(point))
        if best is None or key >= best[0]:
            best = key, Mount(fields[2], point, tail[0], tail[1])
    return None if best is None else best[1]


def inode_sync_note(mountinfo: str, path: str, dev: int,
                    journal_task: Callable[[str], str]) -> str | None:
    """Why ``fdatasync`` of a journal at ``path`` also writes its file's inode, or None.

    On ext4 made without its journal (``journal_task(device)``, the text of
    ``/sys/fs/ext4/NAME/journal_task``, is ``<none>``) a sync after a write that moved
    the file's times writes the inode's block too: one more disk write on a third or more
    of the syncs (docs/audit.md). ``lazytime`` does not avoid it (the times move the file's
    change counter, which is written at once).
    """
    mount = mount_of(mountinfo, path, dev)
    if mount is None or mount.fstype != "ext4" or journal_task(mount.device) != "<none>":
        return None
    return (f"{mount.source} mounted at {mount.point} is ext4 made without its journal "
            "(feature has_journal): every fdatasync after a write also writes the file's "
            "inode, one more disk write on a third or more of the syncs; put the journal on "
            "ext4 with its journal (tune2fs -O has_journal, unmounted) or XFS "
            "(docs/audit.md, The journal's filesystem)")


def _journal_task(device: str) -> str:
    name = os.path.basename(os.readlink(f"/sys/dev/block/{device}"))
    return Path(f"/sys/fs/ext4/{name}/journal_task").read_text().strip()


MOUNTINFO = Path("/proc/self/mountinfo")


def inode_sync_warning(folder: Path) -> str | None:
    """:func:`inode_sync_note` for ``folder`` on this machine (None when it cannot tell).

    Mount points are bytes: read as paths are (``surrogateescape``), one that is not
    UTF-8 neither stops the lane from opening nor hides the mount of another.
    """
    try:
        path = folder.resolve()
        return inode_sync_note(os.fsdecode(MOUNTINFO.read_bytes()), str(path),
                               os.stat(path).st_dev, _journal_task)
    except (OSError, ValueError):
        return None


_WARNED: set[str] = set()  # the mounts warned of (once a process)


def open_lane(parent: Path, *, segment_bytes: int = 64 << 20, lanes: int = 256) -> Journal:
    """The first journal under ``parent`` (``lane-0``, ``lane-1``, ...) no other process holds.

    Each process writing to one store gets its own lane; a lane left by a process
    that stopped is taken (and its tail indexed) by the next. A lane on ext4 made
    without its journal is logged once a process (:func:`inode_sync_note`).
    ConfigError: every lane is held, or the folder cannot be used.
    """
    for number in range(lanes):
        try:
            journal = Journal(parent / f"lane-{number}", segment_bytes=segment_bytes)
        except JournalBusyError:
            continue
        note = inode_sync_warning(journal.folder)
        if note is not None and note not in _WARNED:
            _WARNED.add(note)
            _log.warning("audit journal %s: %s", journal.folder, note)
        return journal
    raise ConfigError(f"all {lanes} audit journal lanes under {parent} are in use")
