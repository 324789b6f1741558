"""Countersigning: a writer signs the unsigned tail of another keyed chain whose writer
stopped (docs/audit.md, ``countersign``): a tail older than its terms' ``seconds`` plus
:data:`MARGIN`, contiguous, linked to the last signed checkpoint and every keyed hash
right. It does not close the chain (a writer that only stalled may go on); a tail that
does not verify is left unsigned and logged, and ``guard audit verify`` names it.
"""

from __future__ import annotations

import logging
import time

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from guard.audit._checkpoint import Checkpoint, CheckpointKind, sign_checkpoint
from guard.audit._event import FIELD_NAMES, ts_epoch, utc_now
from guard.audit._fields import ChainKey
from guard.audit._ids import new_event_id
from guard.audit._schema import EVENT_COLUMNS
from guard.audit._store import Store
from guard.audit._verify import chain_terms, check_chain, light, stored_checkpoints

_log = logging.getLogger("guard.audit")
MARGIN = 2.0
"""Seconds past ``terms.seconds`` before a tail counts as its writer's no longer."""

_OPEN_CHAINS = ("SELECT writer_id FROM audit_checkpoint GROUP BY writer_id "
                "HAVING max(CASE WHEN kind = 'close' THEN 1 ELSE 0 END) = 0")
_TAIL = (f"SELECT {EVENT_COLUMNS} FROM audit_event WHERE writer_id = ? AND seq > ? "  # noqa: S608
         "ORDER BY seq")
_TS = FIELD_NAMES.index("ts")


def countersign_stale(
    store: Store, signing: Ed25519PrivateKey, key: ChainKey, own: str
) -> list[Checkpoint]:
    """The ``countersign`` checkpoints of every stale, verified unsigned tail of another keyed
    chain than ``own`` in ``store``, for the caller to append (only checkpoints the public
    half of ``signing`` verifies are trusted)."""
    signed = [_countersign_chain(store, signing, key, str(writer))
              for (writer,) in store.rows(_OPEN_CHAINS) if writer != own]
    return [cp for cp in signed if cp is not None]


def _countersign_chain(
    store: Store, signing: Ed25519PrivateKey, key: ChainKey, writer: str
) -> Checkpoint | None:
    public = signing.public_key()
    valid = [cp for cp in stored_checkpoints(store, writer) if cp.valid(public)]
    terms = chain_terms(valid)
    if terms is None or terms.chain not in (3, 4):
        return None
    head = max(valid, key=lambda cp: cp.seq)
    tail = store.rows(_TAIL, (writer, head.seq))
    if not tail or len(tail) > terms.every:
        return None
    first = ts_epoch(str(tail[0][_TS]))
    if first is None or time.time() - first < terms.seconds + MARGIN:
        return None  # its writer may still sign it
    rows = [light(raw, key, chain=terms.chain) for raw in tail]
    problem = check_chain(writer, rows, head.seq + 1, head.hash)
    if problem is not None:
        _log.warning("the unsigned tail of audit chain %s does not verify at seq %s; "
                     "not countersigned", writer, problem.seq)
        return None
    return sign_checkpoint(signing, checkpoint_id=new_event_id(), writer_id=writer,
                           seq=rows[-1].seq, hash_=rows[-1].hash, ts=utc_now(),
                           kind=CheckpointKind.COUNTERSIGN, terms=terms)
