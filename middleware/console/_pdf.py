"""The subject's reply as a PDF document (fpdf2 lays it out).

fpdf2's tables size and draw every cell (each is line-broken twice), about half
a millisecond a cell, so a table of one row per decision grows with the subject:
a long-standing customer's thousands of decisions would take seconds. The PDF
therefore lists decisions that agree in every column it shows once, with how
many there were and the first and last time (:func:`group_decisions`); its
size and time follow the number of distinct groups, not of decisions. Each
decision on its own, with its event id, is in the CSV and JSON exports.
"""

from __future__ import annotations

from dataclasses import dataclass

from fpdf import FPDF
from fpdf.fonts import FontFace

from middleware.console._data import Row
from middleware.console._subject import SubjectView

GROUPED_BY = ("recipient, country, purpose, action, categories, lawful basis, outcome "
              "(with its reason) and final HTTP status")
"""The columns whose values are the same in every decision of a group."""


@dataclass(frozen=True, slots=True)
class DecisionGroup:
    """Decisions about the subject that agree in every column the PDF shows.

    ``count`` decisions, the oldest at ``first`` and the newest at ``last``.
    """

    recipient: str
    country: str | None
    purpose: str
    action: str
    categories: tuple[str, ...]
    lawful_basis: tuple[str, ...]
    allowed: bool
    reason: str
    status: int | None
    count: int
    first: str
    last: str


_Key = tuple[str, str | None, str, str, tuple[str, ...], tuple[str, ...], bool, str, int | None]


def group_decisions(rows: tuple[Row, ...] | list[Row]) -> list[DecisionGroup]:
    """Group ``rows`` by every column the PDF shows, ordered by each group's first decision.

    Args:
        rows: The subject's decisions (any order).
    """
    groups: dict[_Key, tuple[int, str, str]] = {}
    for row in rows:
        e = row.event
        key: _Key = (e.caller, e.country, e.purpose, e.action, e.categories, e.lawful_basis,
               bool(e.allowed), e.reason, row.status)
        seen = groups.get(key)
        groups[key] = (1, e.ts, e.ts) if seen is None else (
            seen[0] + 1, min(seen[1], e.ts), max(seen[2], e.ts))
    out = [DecisionGroup(*key, count, first, last)
           for key, (count, first, last) in groups.items()]
    out.sort(key=lambda g: (g.first, g.last, g.recipient, g.purpose, not g.allowed, g.reason))
    return out


def _latin(text: object) -> str:
    """Core PDF fonts speak Latin-1; anything else becomes ``?``."""
    return str(text).encode("latin-1", "replace").decode("latin-1")


def _outcome(group: DecisionGroup) -> str:
    """``allowed``, or ``allowed``/``refused`` and the reason when it says more."""
    word = "allowed" if group.allowed else "refused"
    return word if group.reason == word else f"{word}: {group.reason}"


def _join(values: tuple[str, ...]) -> str:
    return ", ".join(values) or "-"


class _Reply:
    """One PDF being written: the title block, then one section after another."""

    HEADING = FontFace(emphasis="BOLD", fill_color=(225, 230, 240))

    def __init__(self) -> None:
        pdf = FPDF(orientation="landscape", format="A4")
        pdf.set_title("Right-of-access report")
        pdf.set_author("purpose-guard")
        pdf.set_auto_page_break(auto=True, margin=12)
        pdf.add_page()
        self.pdf = pdf

    def line(self, text: str, size: float = 9, style: str = "") -> None:
        """One line of text across the page."""
        self.pdf.set_font("Helvetica", style, size)
        self.pdf.cell(0, size * 0.55, _latin(text), new_x="LMARGIN", new_y="NEXT")

    def paragraph(self, text: str, size: float = 8) -> None:
        """Text wrapped to the page's width."""
        self.pdf.set_font("Helvetica", "", size)
        self.pdf.multi_cell(0, size * 0.5, _latin(text), new_x="LMARGIN", new_y="NEXT")

    def section(self, title: str) -> None:
        """A section heading; the table font after it."""
        self.pdf.ln(3)
        self.line(title, 12, "B")
        self.pdf.set_font("Helvetica", size=8)

    def table(self, widths: tuple[int, ...], headings: list[str], rows: list[list[object]],
              width: int | None = None) -> None:
        """A table with fixed column widths, headings repeated on each page.

        Args:
            widths: Column widths, as fractions of ``width``.
            headings: The heading row.
            rows: The rows' values (shown as text).
            width: The table's width in mm, from the left margin (the page's by default).
        """
        with self.pdf.table(headings_style=self.HEADING, col_widths=widths, text_align="LEFT",
                            line_height=4, width=width, align="LEFT") as table:
            table.row(headings)
            for values in rows:
                table.row([_latin(v) for v in values])


def to_pdf(view: SubjectView) -> bytes:
    """The right-of-access reply (notice §9) as a PDF document.

    Args:
        view: The subject's reply as the console shows it.
    """
    report = view.report
    doc = _Reply()
    groups = group_decisions(view.decisions)
    refused = sum(1 for row in view.decisions if not row.event.allowed)
    doc.line("Right-of-access report", 16, "B")
    for text in (f"Data subject (pseudonym): {report.subject}",
                 f"Generated: {report.generated_at}",
                 f"Accesses: {len(report.accesses)} by {len(report.recipients)} recipient(s); "
                 f"{report.denied_attempts} refused request(s)"):
        doc.line(text)

    doc.section("Recipients, purposes and categories")
    if not report.recipients:
        doc.line("No recipient has accessed this person's data.", 8)
    else:
        doc.table((28, 16, 13, 45, 43, 32, 16, 42, 42),
                  ["Recipient", "Party", "Country", "Purposes", "Categories", "Lawful basis",
                   "Accesses", "First", "Last"],
                  [[r.recipient, r.party_type or "-", r.country or "-", _join(r.purposes),
                    _join(r.categories), _join(r.lawful_basis), r.accesses, r.first, r.last]
                   for r in report.recipients])

    doc.section("Transfers outside the UK")
    if not view.transfers:
        doc.line("None.", 8)
    else:
        doc.table((60, 30, 60, 30), ["Recipient", "Country", "Safeguard", "Accesses"],
                  [[t.recipient, t.country, t.safeguard, t.accesses] for t in view.transfers],
                  width=180)

    doc.section("Rights requests (subject register)")
    if not view.register:
        doc.line("No rights request is recorded for this person.", 8)
    else:
        doc.table((8, 42, 25, 40, 42, 40, 80),
                  ["#", "Effective", "Entry", "Purpose", "Recorded", "By", "Reference"],
                  [[getattr(e, name, "") or "-" for name in (
                      "seq", "effective", "kind", "purpose", "recorded_at", "recorded_by", "ref")]
                   for e in view.register])

    doc.section("Every decision about this person")
    if not view.decisions:
        doc.line("None.", 8)
    else:
        doc.paragraph(f"{len(view.decisions)} decision(s): {len(view.decisions) - refused} "
                      f"allowed, {refused} refused. Decisions alike in {GROUPED_BY} are one "
                      "line, with their number and the first and last time.")
        doc.paragraph("Each decision on its own, with its time and event id, is in the CSV and "
                      "JSON exports of this report.")
        doc.pdf.ln(1)
        doc.pdf.set_font("Helvetica", size=7.5)  # a full timestamp fits its column
        doc.table((10, 39, 39, 26, 12, 32, 10, 30, 30, 39, 10),
                  ["Count", "First (UTC)", "Last (UTC)", "Recipient", "Country", "Purpose",
                   "Action", "Categories", "Lawful basis", "Outcome", "Status"],
                  [[g.count, g.first, g.last, g.recipient, g.country or "-", g.purpose,
                    g.action or "-", _join(g.categories), _join(g.lawful_basis),
                    _outcome(g),
                    "-" if g.status is None else g.status] for g in groups])
    return bytes(doc.pdf.output())
