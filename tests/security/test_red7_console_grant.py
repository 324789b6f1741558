"""Seventh review: only the console's own allowed look-up opens a subject's report.

A subject's report (every access to the person's data, by whom, for what) opens for
``console.grant_minutes`` with the decision id of an allowed look-up: the auditor asked
the policy for ``console.purpose`` (``rights.request``) about that subject. The console
took any allowed decision whose caller was the auditor and whose subject was the
pseudonym as that grant: an auditor whose look-up the policy refuses, but whose caller id
also calls a guarded service about the person (a support tool's service account), opened
the whole report with the id of that service decision, with no ``rights.request``
decision ever made.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

_CONSOLE_KIT = Path(__file__).resolve().parents[1] / "console"
if str(_CONSOLE_KIT) not in sys.path:
    sys.path.insert(0, str(_CONSOLE_KIT))

from consolekit import (  # noqa: E402
    SUBJECT,
    UvicornThread,
    console_settings,
    example_service,
    token,
)

from guard.audit import load_hmac_key, pseudonymise, wait_indexed  # noqa: E402
from guard.config import Settings  # noqa: E402
from middleware.console import create_console  # noqa: E402

CRM = "svc:crm"
"""Listed as an auditor, but granted no rights.request by the shipped policy."""
SUPPORT = "svc:support"
"""Listed as an auditor and granted rights.request."""


@contextmanager
def _signed_in(url: str, settings: Settings, caller: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=url, timeout=20) as client:
        signed = client.post("/signin", data={"token": token(settings, caller)})
        assert signed.status_code == 303, signed.text
        yield client


def test_a_service_decision_never_opens_the_subjects_report(tmp_path: Path) -> None:
    settings = console_settings(tmp_path, auditors=[CRM, SUPPORT])
    with example_service(settings) as service:
        served = service.get(f"/customers/{SUBJECT}", headers={
            "authorization": f"Bearer {token(settings, CRM)}",
            "x-purpose": "relationship.management"})
    assert served.status_code == 200
    service_decision = served.headers["x-guard-decision-id"]
    wait_indexed(settings.audit)
    pseudonym = pseudonymise(load_hmac_key(settings.audit.hmac_key), SUBJECT)
    with UvicornThread(create_console(settings)) as console, \
            _signed_in(console.url, settings, CRM) as crm:
        refused = crm.post("/subject", data={"subject": SUBJECT})
        assert refused.status_code == 403  # the policy refuses svc:crm the look-up
        report = crm.get(f"/subject/{pseudonym}", params={"grant": service_decision})
        assert report.status_code == 403, "a service decision opened the report"
        assert "relationship.management" not in report.text
        export = crm.get(f"/subject/{pseudonym}/report.json", params={"grant": service_decision})
        assert export.status_code == 403


def test_the_consoles_own_look_up_still_opens_the_report(tmp_path: Path) -> None:
    settings = console_settings(tmp_path, auditors=[CRM, SUPPORT])
    with UvicornThread(create_console(settings)) as console, \
            _signed_in(console.url, settings, SUPPORT) as support:
        looked = support.post("/subject", data={"subject": SUBJECT})
        assert looked.status_code == 303
        assert support.get(looked.headers["location"]).status_code == 200
        grant = looked.headers["location"].split("grant=", 1)[1]
        pseudonym = looked.headers["location"].split("/subject/", 1)[1].split("?", 1)[0]
        exported = support.get(f"/subject/{pseudonym}/report.json", params={"grant": grant})
        assert exported.status_code == 200
