"""Lint of the parties (g4) and of jurisdictions and transfers (g5)."""

from __future__ import annotations

from dataclasses import dataclass, field

import iso3166

from guard.policy._compiled import ADEQUATE, HOME_COUNTRY, MECHANISMS, PARTY_TYPES
from guard.policy._lint_base import CALLER_RE, COUNTRY_SHAPE_RE, Linter
from guard.policy._source import Row

_RESERVED_CALLERS = frozenset({ADEQUATE, *MECHANISMS})


@dataclass(slots=True)
class Parties:
    """Who the callers are and where, as far as the lines are valid."""

    party_type: dict[str, str] = field(default_factory=dict)
    party_row: dict[str, Row] = field(default_factory=dict)
    country: dict[str, str] = field(default_factory=dict)
    country_row: dict[str, Row] = field(default_factory=dict)
    mechanisms: dict[str, list[str]] = field(default_factory=dict)
    adequate: set[str] = field(default_factory=set)
    unsafe: set[str] = field(default_factory=set)  # every personal-data request is refused

    def safe(self, caller: str) -> bool:
        """Whether personal data may flow to ``caller`` (GB, adequacy or a mechanism)."""
        return caller not in self.unsafe


def _valid_caller(lint: Linter, row: Row, caller: str) -> bool:
    if not CALLER_RE.match(caller):
        lint.error("invalid-caller", row, 0, f"caller id {caller!r} contains spaces or quotes",
                   "use an id such as svc:billing")
        return False
    if COUNTRY_SHAPE_RE.match(caller) or caller in _RESERVED_CALLERS:
        lint.error("invalid-caller", row, 0, f"caller id {caller!r} reads as a country or a "
                   "transfer keyword", "give the caller a prefixed id, e.g. svc:name")
        return False
    return True


def _known_country(lint: Linter, row: Row, index: int, code: str) -> bool:
    if code in iso3166.countries_by_alpha2:
        return True
    lint.error("unknown-country", row, index, f"unknown country {code!r}",
               "use an ISO 3166 alpha-2 code such as GB, IE, US"
               + (" (the United Kingdom is GB)" if code == "UK" else ""))
    return False


def lint_parties(lint: Linter, g4: list[Row], g5: list[Row]) -> Parties:
    """Check party types, countries, mechanisms and the adequacy list."""
    parties = Parties()
    for row in g4:
        caller, kind = row.values
        if not _valid_caller(lint, row, caller):
            continue
        if kind not in PARTY_TYPES:
            lint.error("unknown-party-type", row, 1, f"unknown party type {kind!r}",
                       "one of: " + ", ".join(sorted(PARTY_TYPES)))
            continue
        if caller in parties.party_type:
            lint.error("two-party-types", row, 1, f"{caller} already has party type "
                       f"{parties.party_type[caller]} (line {parties.party_row[caller].line})",
                       "a caller has exactly one party type")
            continue
        parties.party_type[caller] = kind
        parties.party_row[caller] = row

    for row in g5:
        first, second = row.values
        if first in parties.party_type:
            if COUNTRY_SHAPE_RE.match(second):
                if not _known_country(lint, row, 1, second):
                    continue
                if first in parties.country:
                    lint.error("two-countries", row, 1, f"{first} already has country "
                               f"{parties.country[first]} (line "
                               f"{parties.country_row[first].line})",
                               "a caller has exactly one jurisdiction")
                    continue
                parties.country[first] = second
                parties.country_row[first] = row
            elif second in MECHANISMS:
                parties.mechanisms.setdefault(first, []).append(second)
            else:
                lint.error("unknown-mechanism", row, 1, f"{second!r} is neither a country nor "
                           "a transfer mechanism", "a mechanism is one of: "
                           + ", ".join(sorted(MECHANISMS)) + "; a country is ISO 3166 alpha-2")
        elif COUNTRY_SHAPE_RE.match(first):
            if not _known_country(lint, row, 0, first):
                continue
            if second != ADEQUATE:
                lint.error("unknown-transfer-line", row, 1, f"a country line must read "
                           f"'g5, {first}, {ADEQUATE}', not {second!r}",
                           "countries only appear on the adequacy list")
                continue
            parties.adequate.add(first)
        else:
            lint.error("unknown-caller", row, 0, f"{first!r} has no party line (g4)",
                       f"declare it: g4, {first}, <party type>")

    for caller, row in parties.party_row.items():
        country = parties.country.get(caller)
        if country is None:
            lint.error("missing-country", row, 0, f"{caller} has no country",
                       f"add: g5, {caller}, <ISO 3166 alpha-2 country>")
            continue
        if (country != HOME_COUNTRY and country not in parties.adequate
                and not parties.mechanisms.get(caller)):
            parties.unsafe.add(caller)
            lint.warning("transfer-not-safeguarded", parties.country_row[caller], 1,
                         f"{caller} is in {country}, which has no adequacy decision, and no "
                         "transfer mechanism is recorded: every request of its for personal "
                         "data is denied (transfer_not_safeguarded)",
                         f"record a mechanism (g5, {caller}, idta | uk_addendum) or remove "
                         "its grants")
    return parties
