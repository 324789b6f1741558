"""The subject's reply as CSV, JSON and PDF (fpdf2 lays out the PDF)."""

from __future__ import annotations

import csv
import io
import json

from fpdf import FPDF
from fpdf.fonts import FontFace

from middleware.console._subject import SubjectView

CSV_COLUMNS = ("when", "recipient", "party_type", "country", "purpose", "lawful_basis",
               "categories", "action", "allowed", "reason", "status", "event_id")


def to_csv(view: SubjectView) -> str:
    """Every decision about the subject, one a row, oldest first."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for row in view.decisions:
        e = row.event
        writer.writerow([e.ts, e.caller, e.party_type or "", e.country or "", e.purpose,
                         " ".join(e.lawful_basis), " ".join(e.categories), e.action,
                         "yes" if e.allowed else "no", e.reason,
                         "" if row.status is None else row.status, e.event_id])
    return out.getvalue()


def to_json(view: SubjectView) -> str:
    """The reply as indented JSON."""
    return json.dumps(view.to_dict(), indent=2)


def _latin(text: object) -> str:
    """Core PDF fonts speak Latin-1; anything else becomes ``?``."""
    return str(text).encode("latin-1", "replace").decode("latin-1")


def _join(values: tuple[str, ...]) -> str:
    return ", ".join(values) or "-"


def to_pdf(view: SubjectView) -> bytes:
    """The right-of-access reply (notice §9) as a PDF document."""
    report = view.report
    pdf = FPDF(orientation="landscape", format="A4")
    pdf.set_title("Right-of-access report")
    pdf.set_author("purpose-guard")
    pdf.set_auto_page_break(auto=True, margin=12)
    pdf.add_page()
    pdf.set_font("Helvetica", "B", 16)
    pdf.cell(0, 10, "Right-of-access report", new_x="LMARGIN", new_y="NEXT")
    pdf.set_font("Helvetica", size=9)
    for line in (f"Data subject (pseudonym): {report.subject}",
                 f"Generated: {report.generated_at}",
                 f"Accesses: {len(report.accesses)} by {len(report.recipients)} recipient(s); "
                 f"{report.denied_attempts} refused request(s)"):
        pdf.cell(0, 5, _latin(line), new_x="LMARGIN", new_y="NEXT")
    heading = FontFace(emphasis="BOLD", fill_color=(225, 230, 240))

    def section(title: str) -> None:
        pdf.ln(3)
        pdf.set_font("Helvetica", "B", 12)
        pdf.cell(0, 8, title, new_x="LMARGIN", new_y="NEXT")
        pdf.set_font("Helvetica", size=8)

    section("Recipients, purposes and categories")
    if not report.recipients:
        pdf.cell(0, 5, "No recipient has accessed this person's data.",
                 new_x="LMARGIN", new_y="NEXT")
    else:
        with pdf.table(headings_style=heading, col_widths=(30, 18, 12, 45, 45, 35, 14, 40, 40),
                       text_align="LEFT") as table:
            table.row(["Recipient", "Party", "Country", "Purposes", "Categories",
                       "Lawful basis", "Accesses", "First", "Last"])
            for r in report.recipients:
                table.row([_latin(v) for v in (
                    r.recipient, r.party_type or "-", r.country or "-", _join(r.purposes),
                    _join(r.categories), _join(r.lawful_basis), r.accesses, r.first, r.last)])
    section("Transfers outside the UK")
    if not view.transfers:
        pdf.cell(0, 5, "None.", new_x="LMARGIN", new_y="NEXT")
    else:
        with pdf.table(headings_style=heading, col_widths=(60, 30, 60, 30),
                       text_align="LEFT", width=180, align="LEFT") as table:
            table.row(["Recipient", "Country", "Safeguard", "Accesses"])
            for t in view.transfers:
                table.row([_latin(v) for v in (t.recipient, t.country, t.safeguard, t.accesses)])
    section("Rights requests (subject register)")
    if not view.register:
        pdf.cell(0, 5, "No rights request is recorded for this person.",
                 new_x="LMARGIN", new_y="NEXT")
    else:
        with pdf.table(headings_style=heading, col_widths=(10, 35, 40, 50, 45, 40, 45),
                       text_align="LEFT") as table:
            table.row(["#", "Effective", "Entry", "Purpose", "Recorded", "By", "Reference"])
            for e in view.register:
                table.row([_latin(getattr(e, name, "") or "-") for name in (
                    "seq", "effective", "kind", "purpose", "recorded_at", "recorded_by", "ref")])
    section("Every decision about this person")
    if not view.decisions:
        pdf.cell(0, 5, "None.", new_x="LMARGIN", new_y="NEXT")
    else:
        with pdf.table(headings_style=heading, col_widths=(40, 28, 16, 45, 40, 35, 16, 40, 12),
                       text_align="LEFT") as table:
            table.row(["When", "Recipient", "Country", "Purpose", "Categories",
                       "Lawful basis", "Allowed", "Reason", "Status"])
            for row in view.decisions:
                e = row.event
                table.row([_latin(v) for v in (
                    e.ts, e.caller, e.country or "-", e.purpose, _join(e.categories),
                    _join(e.lawful_basis), "yes" if e.allowed else "no", e.reason,
                    "-" if row.status is None else row.status)])
    return bytes(pdf.output())
