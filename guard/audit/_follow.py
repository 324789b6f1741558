"""``guard audit index``: every lane of a journal folder indexed from a process of its own.

With ``audit.index = "external"`` the writing processes only append to the
journal; one follower per journal folder (a file lock, ``INDEXER``) runs an
:class:`~guard.audit._indexer.Indexer` per lane, lanes of stopped processes
included. A lane no process holds is opened once first, as a writer would:
its torn tail is cut and its synced end published again (after a power loss
the published end may be older than the synced records).
"""

from __future__ import annotations

import contextlib
import gc
import logging
import os
import signal
import subprocess
import sys
import threading
import time
import weakref
from collections.abc import Sequence
from pathlib import Path

from guard._errors import AuditUnavailableError, ConfigError
from guard.audit._indexer import Indexer
from guard.audit._journal import Journal, JournalBusyError, durable_end, lanes, lock_folder
from guard.audit._store import AuditStoreError, Store, open_store, sqlite_path

_log = logging.getLogger("guard.audit")


class Follower:
    """Indexes every lane of a journal folder into a store; one per folder at a time.

    Args:
        folder: The journal folder (its ``lane-N`` journals), or one lane.
        interval: Seconds from durable to in the store that each lane's indexer aims at.
        retry: Seconds between attempts while the store refuses (``audit.index_retry_seconds``).
        idle: Index under ``SCHED_IDLE`` while no record waits longer than this many
            seconds (:meth:`relieve` hands a lane that waits longer to a thread of
            normal policy); None: the threads' policy is left as it is.

    Raises:
        ConfigError: another follower holds the folder, or it cannot be used.
    """

    def __init__(self, folder: Path, store: Store, *, interval: float = 0.3, retry: float = 1.0,
                 idle: float | None = None) -> None:
        self.folder = folder
        self.store = store
        self._interval = interval
        self._retry = retry
        self._idle = idle
        self.indexers: dict[Path, Indexer] = {}
        self._lock = lock_folder(folder, "INDEXER",
                                 f"another `guard audit index` is already indexing {folder}")

    def discover(self) -> None:
        """Start indexing the lanes not indexed yet (a lane no process holds is recovered)."""
        for lane in lanes(self.folder):
            if lane not in self.indexers:
                with contextlib.suppress(JournalBusyError):
                    Journal(lane).close()
                self.indexers[lane] = Indexer(lane, self.store, interval=self._interval,
                                              retry=self._retry, idle=self._idle)

    def relieve(self) -> float:
        """Hand each lane whose idle indexer fell behind to a thread of the caller's policy.

        Returns:
            The monotonic time before which no lane can need it (inf: none ever).
        """
        for indexer in self.indexers.values():
            indexer.relieve()
        now = time.monotonic()
        return min((ix.relief_due(now) for ix in self.indexers.values()), default=float("inf"))

    def progress(self) -> str:
        """Lanes, records durable and not yet in the store, and why: the store refuses, or a
        lane's index stopped (:meth:`Indexer._stop_at`)."""
        behind = sum(max(0, durable_end(lane) - ix.offset) for lane, ix in self.indexers.items())
        error = self.error
        return (f"{len(self.indexers)} lane(s), {behind} record(s) behind"
                + ("" if error is None else f"; {error}" if error.startswith("stopped at")
                   else f"; the store refuses: {error}"))

    @property
    def error(self) -> str | None:
        """The first of its indexers' latest errors; None while they all work."""
        return next((ix.failures.cause for ix in self.indexers.values() if ix.failures.cause),
                    None)

    def catch_up(self, timeout: float) -> None:
        """Return once every lane is indexed up to its durable end as of the call.

        Raises:
            AuditUnavailableError: a lane did not get there within ``timeout`` seconds.
        """
        for lane, indexer in self.indexers.items():
            if not indexer.wait(durable_end(lane), timeout):
                raise AuditUnavailableError(
                    f"the audit index of {lane} did not catch up within {timeout:g} s: "
                    f"{indexer.failures.cause or 'no progress'}")

    def close(self, timeout: float = 30.0) -> None:
        """Stop after the index transactions under way (``timeout`` each), release the folder."""
        for indexer in self.indexers.values():
            indexer.close(timeout, catch_up=False)
        os.close(self._lock)


# -- audit.index = "auto": the follower as a child process of the service -------------------------

_STATUS_EVERY = 0.1
"""Fewest seconds between two looks of the child's main thread (normal policy) at its
indexers' lag and errors; it sleeps until a lane could need relief (:meth:`Follower.relieve`)
or a new lane could appear (every second): about 3 wake-ups a second, not 10."""
_IDLE_LAG = 0.4
"""Seconds a record may wait for the child's index under ``SCHED_IDLE`` before a thread of
normal policy takes over (the pace's interval is 0.3 s, the index's lag target 1 s)."""


def check_cpus(cpus: Sequence[int]) -> None:
    """ConfigError if ``audit.index_cpus`` names a CPU this machine lacks (checked before
    anything is opened)."""
    lacking = sorted(set(cpus) - set(range(os.cpu_count() or 1)))
    if lacking:
        raise ConfigError(f"audit.index_cpus names CPU {lacking[0]}, which this machine "
                          f"lacks (CPUs 0-{(os.cpu_count() or 1) - 1})")


class ChildIndexer:
    """Runs this module (:func:`main`, the follower of ``guard audit index``) as a child.

    The child indexes every lane of ``folder``; it is restarted when it dies and
    stopped by :meth:`close`, and it stops by itself when this process dies (its
    standard input, a pipe from here, ends). A line to that pipe asks it to index
    what is durable now (:meth:`want`); it answers with its status lines
    (``ok``, ``waiting`` for another indexer's ``INDEXER`` lock, ``error: ...``).
    Once caught up, its indexers run under ``SCHED_IDLE``: the service's threads,
    woken by a sync or a request, take the CPU from them at once; a lane that
    waits longer than ``_IDLE_LAG`` seconds goes to a thread of normal policy.

    Args:
        folder: The journal folder (its ``lane-N`` journals).
        store_url: The store's URL (``sqlite:///PATH``, ``postgresql://...``).
        retry: Seconds between the child's attempts while the store refuses, and before a
            child that died is started again (doubled, up to 30 s, while children die
            before they report that they run): ``audit.index_retry_seconds``.
        interval: Seconds from durable to in the store that the child's indexers aim at.
        cpus: The CPUs the child runs on (``audit.index_cpus``, checked by
            :func:`check_cpus`); empty: the service's.
    """

    def __init__(self, folder: Path, store_url: str, *, retry: float = 1.0,
                 interval: float = 0.3, cpus: Sequence[int] = ()) -> None:
        self.folder = folder.resolve()
        self._url = "sqlite:///" + str(sqlite_path(store_url).resolve()) \
            if store_url.startswith("sqlite:///") else store_url
        self._options = ([f"--interval={interval!r}"] if interval != 0.3 else []) \
            + ([f"--retry={retry!r}"] if retry != 1.0 else []) \
            + ([f"--cpus={','.join(map(str, sorted(set(cpus))))}"] if cpus else [])
        self._restart = retry
        self.last_error: str | None = None  # the child's indexers' latest; None while they work
        self.restarts = 0
        self._closing = threading.Event()
        self._lock = threading.Lock()
        self._delay = retry / 2  # the first quick death waits ``retry``
        self._proc = self._spawn()
        self._thread = threading.Thread(target=self._supervise, name="audit-index-child",
                                        daemon=True)
        self._thread.start()
        _CHILDREN[self.folder] = self

    @property
    def pid(self) -> int:
        return self._proc.pid

    def _spawn(self) -> subprocess.Popen[bytes]:
        flags = sys.flags  # the service's isolation (-I, -E, -s) is the child's too
        isolation = [f for f, on in (("-I", flags.isolated), ("-E", flags.ignore_environment),
                                     ("-s", flags.no_user_site)) if on]
        return subprocess.Popen(  # -P: the working folder is not on its module path
            [sys.executable, *isolation, "-P", "-m", "guard.audit._follow", str(self.folder),
             self._url, *self._options],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, close_fds=True)

    def _supervise(self) -> None:
        """Read the child's status lines; start a new child when one dies (not closing)."""
        while True:
            proc, ran = self._proc, False
            assert proc.stdout is not None
            for line in proc.stdout:
                text = line.decode(errors="replace").strip()
                self.last_error = text.removeprefix("error: ") \
                    if text.startswith("error: ") else None
                ran = True
            code = proc.wait()
            delay = self._restart if ran else min(30.0, self._delay * 2)
            if self._closing.wait(0 if code == 0 else delay):
                return
            _log.warning("audit index process %d exited with %d; starting it again",
                         proc.pid, code)
            with self._lock:
                if self._closing.is_set():
                    return
                self._proc = self._spawn()
                self.restarts += 1
                self._delay = delay

    def want(self) -> None:
        """Ask the child to index every lane up to its durable end now, not at its pace."""
        with self._lock, contextlib.suppress(OSError, ValueError):
            stdin = self._proc.stdin
            assert stdin is not None
            stdin.write(b"want\n")
            stdin.flush()

    def close(self, timeout: float = 30.0) -> None:
        """Stop the child after its transaction under way (killed after ``timeout`` seconds)."""
        with self._lock:
            self._closing.set()
            proc = self._proc
        if proc.stdin is not None:
            with contextlib.suppress(OSError):
                proc.stdin.close()
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        self._thread.join(timeout)


def _next_look(now: float, due: float, looked: float) -> float:
    """Seconds the child's main thread sleeps: until a lane may need relief (``due``) or the
    folder's next look for lanes (a second after ``looked``), at least ``_STATUS_EVERY``."""
    return max(_STATUS_EVERY, min(due, looked + 1.0) - now)


_CHILDREN: weakref.WeakValueDictionary[Path, ChildIndexer] = weakref.WeakValueDictionary()
"""This process's child indexers by their journal folder (resolved)."""


def hurry(folder: Path) -> None:
    """Ask this process's child indexer of the journal ``folder``, if any, to index now.

    A reader that waits for the store (:func:`guard.audit.wait_indexed`) need not wait
    for the child's pace when the child was started by its own process.
    """
    child = _CHILDREN.get(folder.resolve())
    if child is not None:
        child.want()


def _say(status: str, said: str) -> str:
    """Write ``status`` as a line to standard output unless it is ``said``; return it."""
    if status != said:
        sys.stdout.write(status + "\n")
        sys.stdout.flush()
    return status


def _pin(cpus: str) -> None:
    """Run this process (and the threads it starts later) on ``cpus`` (``1,2``), if it may.

    The index is not on the decision path: a set the system refuses (a container's
    CPU set without them) is logged and the child indexes on the service's CPUs.
    """
    if cpus:
        try:
            os.sched_setaffinity(0, {int(cpu) for cpu in cpus.split(",")})
        except (AttributeError, OSError) as exc:
            _log.warning("audit index process: cannot run on CPUs %s (audit.index_cpus): %s; "
                         "it runs on the service's", cpus, exc)


def main(argv: list[str]) -> int:
    """The child of :class:`ChildIndexer`: follow the journal folder ``argv[0]`` into the store
    ``argv[1]`` until standard input ends; status lines (on change) on standard output.

    Options after them: ``--interval=SECONDS`` (the indexers' pace), ``--retry=SECONDS``
    (between attempts while the store refuses), ``--cpus=1,2`` (where the child runs).
    """
    folder, url = Path(argv[0]), argv[1]
    options = dict(arg.removeprefix("--").split("=", 1) for arg in argv[2:])
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    _pin(options.get("cpus", ""))  # before any thread: each inherits it
    if url.startswith("sqlite:"):
        from guard.audit._sqlite import bind_nulls_at_once

        bind_nulls_at_once()
    for sig in (signal.SIGINT, signal.SIGTERM):  # sent to the service's whole group (Ctrl-C,
        signal.signal(sig, signal.SIG_IGN)      # systemd): the service stops us after its end
    stop, wanted = threading.Event(), threading.Event()

    def listen() -> None:
        for _line in sys.stdin.buffer:
            wanted.set()
        stop.set()
        wanted.set()

    threading.Thread(target=listen, name="parent", daemon=True).start()
    follower, store, said = None, None, ""
    retry = float(options.get("retry", 1.0))
    try:
        while follower is None:  # another indexer of the folder may hold it: take over after it
            try:
                store = store or open_store(url, create=True)
                interval = float(options.get("interval", 0.3))  # relief: that much later
                follower = Follower(folder, store, interval=interval, retry=retry,
                                    idle=_IDLE_LAG + max(0.0, interval - 0.3))
            except (JournalBusyError, AuditStoreError) as exc:
                said = _say("waiting" if isinstance(exc, JournalBusyError) else f"error: {exc}",
                            said)
                if stop.wait(retry):
                    return 0
        # What is alive now lives as long as the process: the collector no longer walks it
        # (its full collections walked every module's objects, an eighth of a record's CPU).
        gc.freeze()
        looked = 0.0
        while not stop.is_set():
            if wanted.is_set() or time.monotonic() - looked >= 1.0:
                follower.discover()
                looked = time.monotonic()
            if wanted.is_set():
                wanted.clear()
                for lane, indexer in follower.indexers.items():
                    indexer.want(durable_end(lane))
            due = follower.relieve()  # from this thread, of normal policy: Indexer.relieve
            said = _say("ok" if follower.error is None else f"error: {follower.error}", said)
            wanted.wait(_next_look(time.monotonic(), due, looked))
    except Exception as exc:  # one readable line; the service starts another child
        _log.error("audit index process stopped: %s", exc)
        return 1
    finally:
        if follower is not None:
            follower.close()
        if store is not None:
            store.close()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
