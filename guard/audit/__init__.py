"""The audit trail: every decision durably recorded, tamper-evident and queryable.

The names below are imported on first use, so a process that needs one module
(the child indexer, ``python -m guard.audit._follow``) loads only that module's.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from guard.audit._event import GENESIS_HASH, AuditEvent, EventKind
    from guard.audit._ids import new_event_id
    from guard.audit._jtrail import JournalTrail, wait_indexed
    from guard.audit._keys import (
        derive_chain_key,
        load_hmac_key,
        load_public_key,
        load_signing_key,
        pseudonymise,
        public_key_path,
    )
    from guard.audit._query import (
        AuditQueryError,
        Count,
        EventFilter,
        QueryRow,
        Stats,
        parse_when,
        query_events,
        stats,
    )
    from guard.audit._report import SubjectReport, subject_report
    from guard.audit._store import AuditStoreError, Store, open_store
    from guard.audit._verify import Problem, VerifyReport, verify
    from guard.audit._witness import read_witness

__all__ = [
    "GENESIS_HASH", "AuditEvent", "AuditQueryError", "AuditStoreError", "Count", "EventFilter",
    "EventKind", "JournalTrail", "Problem", "QueryRow", "Stats", "Store", "SubjectReport",
    "VerifyReport", "derive_chain_key", "load_hmac_key", "load_public_key",
    "load_signing_key", "new_event_id", "open_store", "parse_when", "pseudonymise",
    "public_key_path", "query_events", "read_witness", "stats", "subject_report",
    "verify", "wait_indexed",
]
_MODULES = {"_event": "GENESIS_HASH AuditEvent EventKind", "_ids": "new_event_id",
            "_jtrail": "JournalTrail wait_indexed",
            "_keys": "derive_chain_key load_hmac_key load_public_key load_signing_key "
                     "pseudonymise public_key_path",
            "_query": "AuditQueryError Count EventFilter QueryRow Stats parse_when query_events "
                      "stats",
            "_report": "SubjectReport subject_report", "_store": "AuditStoreError Store open_store",
            "_verify": "Problem VerifyReport verify", "_witness": "read_witness"}
_WHERE = {name: module for module, names in _MODULES.items() for name in names.split()}


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module 'guard.audit' has no attribute {name!r}")
    value = globals()[name] = getattr(import_module(f"guard.audit.{_WHERE[name]}"), name)
    return value
