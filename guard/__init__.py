"""purpose-guard core: policy, decisions and the audit trail. No HTTP here."""

from __future__ import annotations

from guard._errors import AuditUnavailableError, ConfigError, GuardError, PolicyError
from guard._guard import Checked, Guard, Ruling
from guard._types import Action, Decision, HttpContext, Reason, Request, denial

__all__ = [
    "Action",
    "AuditUnavailableError",
    "Checked",
    "ConfigError",
    "Decision",
    "Guard",
    "GuardError",
    "HttpContext",
    "PolicyError",
    "Reason",
    "Request",
    "Ruling",
    "denial",
]
