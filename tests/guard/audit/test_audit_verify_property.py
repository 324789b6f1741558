"""Property: any change to any stored field of any event is caught and that event is named."""

from __future__ import annotations

import itertools
import shutil
import sqlite3
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from guard.audit import EventKind, load_public_key, open_store, verify
from guard.audit._event import FIELD_NAMES
from tests.guard.audit.conftest import CHAIN_KEY, Keys, decision_event, make_trail, record

N = 12
EDITABLE = [f for f in FIELD_NAMES if f not in ("event_id", "seq", "writer_id", "hash")]


@pytest.fixture(scope="module")
def recorded(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Keys, list[str]]:
    base = tmp_path_factory.mktemp("chain")
    signing = base / "sign.key"
    keys = Keys(signing, signing.with_name("sign.key.pub"))
    from guard.audit import load_signing_key

    load_signing_key(signing, create=True)
    db = base / "audit.db"
    trail = make_trail(f"sqlite:///{db}", keys, checkpoint_every=4)
    for i in range(N):
        record(trail, decision_event(subject_id=f"p{i}", http_status=200 + i, latency_us=i))
    trail.close()
    conn = sqlite3.connect(db)
    ids = [r[0] for r in conn.execute("SELECT event_id FROM audit_event ORDER BY seq")]
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()
    return db, keys, ids


@settings(max_examples=40, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(seq=st.integers(1, N), field=st.sampled_from(EDITABLE))
def test_any_edit_is_named(recorded: tuple[Path, Keys, list[str]], tmp_path: Path,
                           seq: int, field: str) -> None:
    db, keys, ids = recorded
    copy = tmp_path / f"copy-{seq}-{field}.db"
    shutil.copy(db, copy)
    conn = sqlite3.connect(copy)
    with conn:
        # A different value of the same shape: numbers move by one, text gains a mark.
        conn.execute(
            f"UPDATE audit_event SET {field} = CASE WHEN typeof({field}) = 'integer' "
            f"THEN {field} + 1 WHEN {field} IS NULL THEN 'x' ELSE {field} || 'x' END "
            "WHERE seq = ?", (seq,))
    conn.close()
    store = open_store(f"sqlite:///{copy}", create=False)
    report = verify(store, load_public_key(keys.public), chain_key=CHAIN_KEY)
    store.close()
    copy.unlink()
    assert len(report.problems) == 1
    problem = report.problems[0]
    assert problem.event_id == ids[seq - 1], str(problem)


@settings(max_examples=15, deadline=None)
@given(every=st.integers(1, 6), batches=st.lists(st.integers(1, 9), min_size=1, max_size=5))
def test_what_the_writer_writes_keeps_its_signed_bound(every: int, batches: list[int]) -> None:
    """Checkpoints at the exact event, batch sizes notwithstanding: no stretch exceeds ``every``."""
    import tempfile

    from guard.audit import load_signing_key

    with tempfile.TemporaryDirectory() as tmp:
        keys = Keys(Path(tmp) / "sign.key", Path(tmp) / "sign.key.pub")
        load_signing_key(keys.signing, create=True)
        url = f"sqlite:///{tmp}/audit.db"
        trail = make_trail(url, keys, checkpoint_every=every)
        for size in batches:
            trail.record_many_fields(EventKind.DECISION,
                                     [{"subject_id": f"b{i}"} for i in range(size)])
        trail.close()
        store = open_store(url, create=False)
        report = verify(store, load_public_key(keys.public), chain_key=CHAIN_KEY)
        seqs = sorted(int(r[0]) for r in store.rows("SELECT seq FROM audit_checkpoint"))
        store.close()
    assert report.ok, report.problems
    assert report.notes == ()
    assert all(b - a <= every for a, b in itertools.pairwise(seqs))
