"""purpose-guard core: policy, decisions and the audit trail. No HTTP here.

The names below are imported on first use, so a process that needs one module
(the audit index child, ``python -m guard.audit._follow``) loads only that module's.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

from guard._errors import AuditUnavailableError, ConfigError, GuardError, PolicyError

if TYPE_CHECKING:
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
_WHERE = dict.fromkeys(("Checked", "Guard", "Ruling"), "_guard") | dict.fromkeys(
    ("Action", "Decision", "HttpContext", "Reason", "Request", "denial"), "_types")


def __getattr__(name: str) -> Any:
    """Import ``name`` from its module on first use."""
    if name not in _WHERE:
        raise AttributeError(f"module 'guard' has no attribute {name!r}")
    value = globals()[name] = getattr(import_module(f"guard.{_WHERE[name]}"), name)
    return value
