"""Data subjects' rights (POLICY-SPEC §4): the register decisions naming a subject respect."""

from __future__ import annotations

from guard.rights._entries import (
    Entry,
    EntryKind,
    Record,
    RegisterRefusedError,
    RegisterUnreadableError,
    State,
    fold,
)
from guard.rights._judge import Verdict, consent_in_force, register_checks
from guard.rights._register import Register
from guard.rights._store import RegisterStore
from guard.rights._validate import Change, objectable_under, validate

__all__ = [
    "Change",
    "Entry",
    "EntryKind",
    "Record",
    "Register",
    "RegisterRefusedError",
    "RegisterStore",
    "RegisterUnreadableError",
    "State",
    "Verdict",
    "consent_in_force",
    "fold",
    "objectable_under",
    "register_checks",
    "validate",
]
