"""Survival after the end of a customer relationship (POLICY-SPEC §4): policy data in rules.csv.

A survival row reuses casbin's ``g3`` with a ``survives:`` prefix, as ceilings reuse
``g`` with ``ceiling:``: ``g3, legal.compliance, survives:6y``. The model's
matcher asks ``g3`` only about the six lawful bases, which a ``survives:`` node
never reaches, so casbin's decisions are unchanged by these rows.
"""

from __future__ import annotations

import calendar
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date, timedelta

SURVIVES_PREFIX = "survives:"
UNLIMITED = "unlimited"
_PERIOD_RE = re.compile(r"^([1-9][0-9]{0,3})([ymd])$")


@dataclass(frozen=True, slots=True)
class Survival:
    """How long a purpose (and the purposes under it) may be used after the end.

    Args:
        purpose: The purpose or grouping node the row names.
        period: The period as written: ``6y``, ``18m``, ``90d`` or ``unlimited``.
        location: The rules.csv line, e.g. ``rules.csv:120``.
    """

    purpose: str
    period: str
    location: str

    def until(self, end: date) -> date | None:
        """The first day the purpose may no longer be used; None without limit.

        A period that ends after the calendar's last day (``9999y``) has no limit
        a date can name: None, as for ``unlimited``.
        """
        if self.period == UNLIMITED:
            return None
        match = _PERIOD_RE.match(self.period)
        if match is None:  # lint refuses such a row; fail closed if one got here
            return end
        count, unit = int(match.group(1)), match.group(2)
        if unit == "d":
            return end + timedelta(days=count) if (date.max - end).days >= count else None
        months = count * 12 if unit == "y" else count
        year, month = divmod(end.month - 1 + months, 12)
        year += end.year
        if year > date.max.year:
            return None
        day = min(end.day, calendar.monthrange(year, month + 1)[1])
        return date(year, month + 1, day)


def valid_period(text: str) -> bool:
    """Whether ``text`` is a period a survival row may name."""
    return text == UNLIMITED or _PERIOD_RE.match(text) is not None


def survival_of(
    survival: Mapping[str, Survival], ancestors: tuple[str, ...]
) -> Survival | None:
    """The survival row of the nearest node among ``ancestors`` (itself first), if any."""
    for key in ancestors:
        found = survival.get(key)
        if found is not None:
            return found
    return None
