"""The subject's reply as CSV, JSON and PDF (the PDF is :mod:`middleware.console._pdf`'s)."""

from __future__ import annotations

import csv
import io
import json

from guard._cells import csv_cell
from middleware.console._pdf import to_pdf
from middleware.console._subject import SubjectView

__all__ = ["CSV_COLUMNS", "to_csv", "to_json", "to_pdf"]

CSV_COLUMNS = ("when", "recipient", "party_type", "country", "purpose", "lawful_basis",
               "categories", "action", "allowed", "reason", "status", "event_id")


def to_csv(view: SubjectView) -> str:
    """Every decision about the subject, one a row, oldest first; each cell read as text."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for row in view.decisions:
        e = row.event
        writer.writerow([csv_cell(v) for v in (
            e.ts, e.caller, e.party_type or "", e.country or "", e.purpose,
            " ".join(e.lawful_basis), " ".join(e.categories), e.action,
            "yes" if e.allowed else "no", e.reason,
            "" if row.status is None else row.status, e.event_id)])
    return out.getvalue()


def to_json(view: SubjectView) -> str:
    """The reply as indented JSON."""
    return json.dumps(view.to_dict(), indent=2)
