"""The subject's reply as a PDF document (fpdf2 writes it; its tables are drawn here).

A table of one row per decision would grow with the subject: a long-standing
customer's thousands of decisions would take seconds and pages. The PDF
therefore lists decisions that agree in every column it shows once, with how
many there were and the first and last time (:func:`.group_decisions`); its
size and time follow the number of kinds of decision. Each decision on its own,
with its event id, is in the CSV and JSON exports. Table cells are broken into
lines once, from the core font's character widths (fpdf2's own tables break each
cell character by character, twice: about 4 ms a row of eleven cells).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import cast

from fpdf import FPDF

from middleware.console._subject import GROUPED_BY, SubjectView, group_decisions

__all__ = ["group_decisions", "to_pdf"]


def _latin(text: object) -> str:
    """Core PDF fonts speak Latin-1; anything else becomes ``?``."""
    return str(text).encode("latin-1", "replace").decode("latin-1")


def _join(values: tuple[str, ...]) -> str:
    return ", ".join(values) or "-"


class _Reply:
    """One PDF being written: the title block, then one section after another."""

    HEADING_FILL = (225, 230, 240)
    LINE = 4.0
    """Height of one line of text in a table cell (mm)."""
    PAD = 1.0
    """Space between a cell's border and its text (mm)."""

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
        """A table with fixed column widths, headings repeated on each page, in the current
        font size.

        Each cell's text is broken into lines here (at spaces, else inside a word too
        long for its column) from the core font's character widths, and each line is
        drawn once: fpdf2's own tables break every cell character by character, twice
        (to size the row, then to draw it), about 4 ms a row of eleven cells.

        Args:
            widths: Column widths, as fractions of ``width``.
            headings: The heading row.
            rows: The rows' values (shown as text).
            width: The table's width in mm, from the left margin (the page's by default).
        """
        pdf = self.pdf
        size = pdf.font_size_pt
        total = pdf.epw if width is None else width
        columns = [total * w / sum(widths) for w in widths]
        self._row(columns, headings, size, heading=True)
        for values in rows:
            if not self._row(columns, [_latin(v) for v in values], size):
                self._row(columns, headings, size, heading=True)  # on the new page
                self._row(columns, [_latin(v) for v in values], size)

    def _row(self, columns: list[float], texts: list[str], size: float, *,
             heading: bool = False) -> bool:
        """Draw one row below the last; False (nothing drawn, a new page begun) when
        it does not fit on this page."""
        pdf = self.pdf
        pdf.set_font("Helvetica", "B" if heading else "", size)
        cells = [_wrap(text, width - 2 * self.PAD, pdf) for text, width in
                 zip(texts, columns, strict=True)]
        height = max(len(lines) for lines in cells) * self.LINE
        top = pdf.get_y()
        if top + height > pdf.page_break_trigger and top > pdf.t_margin + self.LINE:
            pdf.add_page()
            return False
        if heading:
            pdf.set_fill_color(*self.HEADING_FILL)
        x = pdf.l_margin
        baseline = self.LINE / 2 + 0.3 * size / pdf.k
        for lines, width in zip(cells, columns, strict=True):
            pdf.rect(x, top, width, height, style="DF" if heading else "D")
            for n, text in enumerate(lines):
                pdf.text(x + self.PAD, top + n * self.LINE + baseline, text)
            x += width
        pdf.set_xy(pdf.l_margin, top + height)
        return True


def _wrap(text: str, width: float, pdf: FPDF) -> list[str]:
    """``text`` in lines no wider than ``width`` mm in the current (core, Latin-1) font.

    Lines break at spaces; a word wider than the column breaks where it must.
    """
    assert pdf.current_font is not None
    widths = cast("Mapping[str, float]", pdf.current_font.cw)  # a core font's: by character
    limit = width / (pdf.font_size_pt * 0.001 / pdf.k)  # in the font's units
    space = widths[" "]
    lines: list[str] = []
    line, used = "", 0.0
    for whole in text.split():
        word, size = whole, float(sum(widths[c] for c in whole))
        if line and used + space + size <= limit:
            line, used = f"{line} {word}", used + space + size
            continue
        if line:
            lines.append(line)
        while size > limit:  # longer than the column: cut it
            cut, taken = 1, widths[word[0]]
            while cut < len(word) and taken + widths[word[cut]] <= limit:
                taken += widths[word[cut]]
                cut += 1
            lines.append(word[:cut])
            word, size = word[cut:], size - taken
        line, used = word, size
    lines.append(line)
    return lines


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
        if view.refused_unlisted:
            doc.paragraph(f"{view.refused_unlisted} further refused request(s) are counted "
                          "above but not listed (the oldest refused ones are).")
        doc.paragraph("Each decision on its own, with its time and event id, is in the CSV and "
                      "JSON exports of this report.")
        doc.pdf.ln(1)
        doc.pdf.set_font("Helvetica", size=7.5)  # a full timestamp fits its column
        doc.table((10, 39, 39, 26, 12, 32, 10, 30, 30, 39, 10),
                  ["Count", "First (UTC)", "Last (UTC)", "Recipient", "Country", "Purpose",
                   "Action", "Categories", "Lawful basis", "Outcome", "Status"],
                  [[g.count, g.first, g.last, g.recipient, g.country or "-", g.purpose,
                    g.action or "-", _join(g.categories), _join(g.lawful_basis),
                    g.outcome,
                    "-" if g.status is None else g.status] for g in groups])
    return bytes(doc.pdf.output())
