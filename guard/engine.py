"""Decisions: the ordered checks of POLICY-SPEC §3 over a compiled policy.

``decide`` is the hot path: a few dictionary look-ups per category, whatever the
size of the policy. ``explain`` runs the same checks and records each one.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Protocol

from guard._types import Action, Decision, Reason, Request
from guard.policy._compiled import (
    AGGREGATED,
    Category,
    CompiledPolicy,
    GrantKey,
    Party,
    Purpose,
)
from guard.rights._entries import State
from guard.rights._judge import register_checks

_casbin_lock = threading.Lock()
_AGGREGATED_RULE = ("builtin:aggregated",)


@dataclass(frozen=True, slots=True)
class Step:
    """One check of ``explain``: what it looked at and what it concluded."""

    check: str
    looked_at: str
    passed: bool
    detail: str


class SubjectLookup(Protocol):
    """The subject register as decisions see it (``guard.rights.Register``)."""

    def lookup(self, subject: str) -> State | None:
        """The subject's entries in force; None for a subject with no entry."""


def utc_today() -> date:
    """Today's date in UTC: the day register entries are judged on."""
    return datetime.now(UTC).date()


def decide(
    policy: CompiledPolicy,
    request: Request,
    register: SubjectLookup | None = None,
    *,
    today: date | None = None,
) -> Decision:
    """Judge a request; allowed only if every category passes every check.

    Args:
        policy: The compiled policy.
        request: The request; one naming a subject is judged against ``register``.
        register: The subject register (None: no subject has an entry).
        today: The day to judge register entries on (default: today, UTC).
    """
    return _judge(policy, request, None, register, today)


def explain(
    policy: CompiledPolicy,
    request: Request,
    register: SubjectLookup | None = None,
    *,
    today: date | None = None,
) -> tuple[Decision, list[Step]]:
    """Judge a request and say, check by check, why (arguments as :func:`decide`)."""
    steps: list[Step] = []
    return _judge(policy, request, steps, register, today), steps


def _result(
    policy: CompiledPolicy,
    request: Request,
    reason: Reason,
    *,
    purpose: Purpose | None = None,
    party: Party | None = None,
    rule: tuple[str, ...] | None = None,
) -> Decision:
    allowed = reason is Reason.ALLOWED
    return Decision(
        allowed=allowed,
        reason=reason,
        categories=request.categories,
        lawful_basis=purpose.bases if purpose is not None else (),
        rule=rule if rule is not None else (f"check:{reason.value}",),
        policy_version=policy.version,
        caller=request.caller,
        purpose=request.purpose,
        action=request.action,
        party_type=party.party_type if party is not None else None,
        country=party.country if party is not None else None,
    )


def _party_and_grants(
    policy: CompiledPolicy, request: Request,
) -> tuple[Party | None, Mapping[GrantKey, tuple[str, ...]] | None]:
    """The caller, and its grants when one probe finds both (checks 1 and 5 of a granted
    request); otherwise the caller alone, and None: the caller's grants are looked up later."""
    joined = policy.joined.get((request.caller, request.purpose))
    if joined is not None:
        return joined
    return policy.parties.get(request.caller), None


def _judge(
    policy: CompiledPolicy,
    request: Request,
    steps: list[Step] | None,
    register: SubjectLookup | None = None,
    today: date | None = None,
) -> Decision:
    if not request.categories:
        if steps is not None:
            steps.append(Step("malformed_request", "categories", False, "no category named"))
        return _result(policy, request, Reason.MALFORMED_REQUEST)
    if policy.enforcer is not None:
        return _judge_with_casbin(policy, request, steps, register, today)

    party, grants = _party_and_grants(policy, request)

    # 1. unknown_caller
    if steps is not None:
        steps.append(Step(
            "unknown_caller", f"caller {request.caller!r}", party is not None,
            f"{party.party_type or 'party'} in {party.country or 'no country'}"
            if party else "not in the policy",
        ))
    if party is None:
        return _result(policy, request, Reason.UNKNOWN_CALLER)

    # 2. unknown_purpose
    purpose = policy.purposes.get(request.purpose)
    declarable = purpose is not None and purpose.declarable
    if steps is not None:
        steps.append(Step(
            "unknown_purpose", f"purpose {request.purpose!r}", declarable,
            "declarable, lawful basis: " + ", ".join(purpose.bases) if purpose and declarable
            else "a grouping node, not declarable" if purpose else "not in the purpose tree",
        ))
    if purpose is None or not declarable:
        return _result(policy, request, Reason.UNKNOWN_PURPOSE, party=party)

    # 3. unknown_category
    nodes: list[Category] = []
    for key in request.categories:
        node = policy.categories.get(key)
        if node is None:
            if steps is not None:
                steps.append(Step("unknown_category", f"category {key!r}", False,
                                  "not in the category tree"))
            return _result(policy, request, Reason.UNKNOWN_CATEGORY, purpose=purpose, party=party)
        nodes.append(node)
    if steps is not None:
        steps.append(Step("unknown_category", "categories " + ", ".join(request.categories),
                          True, "all in the category tree"))

    # 4. special_category
    for node in nodes:
        if node.special:
            if steps is not None:
                steps.append(Step("special_category", f"category {node.key!r}", False,
                                  "special categories are never collected"))
            return _result(policy, request, Reason.SPECIAL_CATEGORY, purpose=purpose, party=party)
    if steps is not None:
        steps.append(Step("special_category", "categories", True, "none is special"))

    # 5. purpose_not_granted
    if grants is None:
        grants = policy.grants.get((request.caller, purpose.key))
    if steps is not None:
        steps.append(Step(
            "purpose_not_granted", f"grants of {request.caller} on {' < '.join(purpose.ancestors)}",
            bool(grants), "granted" if grants else "no grant on this purpose or an ancestor",
        ))
    if not grants:
        return _result(policy, request, Reason.PURPOSE_NOT_GRANTED, purpose=purpose, party=party)

    # 6. category_not_in_purpose
    for node in nodes:
        if node.key != AGGREGATED and node.key not in purpose.ceiling:
            if steps is not None:
                steps.append(Step(
                    "category_not_in_purpose", f"category {node.key!r}", False,
                    f"outside {purpose.key}'s ceiling ({', '.join(purpose.ceiling_roots)})",
                ))
            return _result(policy, request, Reason.CATEGORY_NOT_IN_PURPOSE,
                           purpose=purpose, party=party)
    if steps is not None:
        steps.append(Step("category_not_in_purpose", f"ceiling of {purpose.key}", True,
                          ", ".join(purpose.ceiling_roots)))

    # 7. category_not_granted (need-to-know, and the action)
    action = request.action.value
    rules: list[str] = []
    personal = False  # aggregated is not personal data: no transfer check for it alone
    for node in nodes:
        found: tuple[str, ...] | None = None
        if node.key == AGGREGATED:
            if request.action is Action.READ:
                found = _AGGREGATED_RULE
        else:
            personal = True
            for ancestor in node.ancestors:  # the nearest granted node wins
                found = grants.get((ancestor, action))
                if found is not None:
                    break
        if found is None:
            if steps is not None:
                steps.append(Step("category_not_granted", f"{action} {node.key!r}", False,
                                  f"{request.caller} holds no {action} grant covering it"))
            return _result(policy, request, Reason.CATEGORY_NOT_GRANTED,
                           purpose=purpose, party=party)
        rules.extend(found)
    if steps is not None:
        steps.append(Step("category_not_granted", f"{action} grants", True,
                          "granted by " + ", ".join(dict.fromkeys(rules))))

    # 8. transfer_not_safeguarded
    if personal and not party.transfer_safe:
        if steps is not None:
            steps.append(Step("transfer_not_safeguarded", f"country {party.country}", False,
                              "outside GB, not adequate, no transfer mechanism recorded"))
        return _result(policy, request, Reason.TRANSFER_NOT_SAFEGUARDED,
                       purpose=purpose, party=party)
    if steps is not None:
        how = ("GB" if party.country == "GB" else
               ", ".join(party.mechanisms) or "adequacy") if personal else "not personal data"
        steps.append(Step("transfer_not_safeguarded", f"country {party.country}", True, how))

    granted: tuple[str, ...] = (found if len(nodes) == 1 and found is not None
                                else tuple(dict.fromkeys(rules)))
    subject = request.subject
    state = register.lookup(subject) if subject is not None and register is not None else None

    # 9.-13. consent, then the subject register (POLICY-SPEC §3, §4)
    if state is None and (subject is None or not purpose.consent_only):
        if purpose.consent_only:  # no subject: no consent can be in force
            if steps is not None:
                steps.append(Step("consent_required", f"lawful basis of {purpose.key}", False,
                                  "consent is the only basis and the request names no "
                                  "data subject"))
            return _result(policy, request, Reason.CONSENT_REQUIRED, purpose=purpose,
                           party=party)
        if steps is not None:
            steps.append(Step("consent_required", f"lawful basis of {purpose.key}", True,
                              ", ".join(purpose.bases)))
            why = ("no subject named" if subject is None
                   else "no register entry for the subject")
            steps.extend(Step(check, "subject register", True, why) for check in _REGISTER)
        return _result(policy, request, Reason.ALLOWED, purpose=purpose, party=party,
                       rule=granted)

    verdicts = register_checks(
        state or (), purpose, personal=personal, today=today or utc_today(),
        survival=policy.survival,
    )
    last = verdicts[-1]
    if steps is not None:
        steps.extend(
            Step(v.reason.value, "register entry " + v.record.rule if v.record is not None
                 else "subject register", v.passed, v.detail)
            for v in verdicts
        )
    if not last.passed:
        rule = (last.record.rule,) if last.record is not None else None
        return _result(policy, request, last.reason, purpose=purpose, party=party, rule=rule)
    consent = verdicts[0].record
    if consent is not None:
        granted = (*granted, consent.rule)
    return _result(policy, request, Reason.ALLOWED, purpose=purpose, party=party,
                   rule=granted)


_REGISTER = tuple(r.value for r in (Reason.RETENTION_EXPIRED, Reason.ERASURE_REQUESTED,
                                    Reason.PROCESSING_RESTRICTED, Reason.OBJECTION_RECORDED))


def _judge_with_casbin(
    policy: CompiledPolicy,
    request: Request,
    steps: list[Step] | None,
    register: SubjectLookup | None,
    today: date | None,
) -> Decision:
    """Slow path for a model the compiler does not recognise: ask casbin per category."""
    purpose = policy.purposes.get(request.purpose)
    party = policy.parties.get(request.caller)
    with _casbin_lock:  # casbin's role managers mutate on look-up
        for key in request.categories:
            ok = bool(policy.enforcer.enforce(
                request.caller, request.purpose, key, request.action.value
            ))
            if steps is not None:
                steps.append(Step("casbin", f"category {key!r}", ok, "casbin Enforcer"))
            if not ok:
                return _result(policy, request, Reason.DENIED_BY_MODEL,
                               purpose=purpose, party=party)
    subject = request.subject
    state = register.lookup(subject) if subject is not None and register is not None else None
    # Check 9 is the guard's, whatever the matcher: a purpose whose only basis is consent
    # needs the subject's consent in force (none without a subject, or without entries).
    if state is not None or (purpose is not None and purpose.consent_only):
        if purpose is None:  # casbin allowed a purpose the tables do not know: fail closed
            return _result(policy, request, Reason.DENIED_BY_MODEL, party=party)
        verdicts = register_checks(
            state or (), purpose, personal=any(c != AGGREGATED for c in request.categories),
            today=today or utc_today(), survival=policy.survival,
        )
        if steps is not None:
            steps.extend(Step(v.reason.value, "subject register", v.passed, v.detail)
                         for v in verdicts)
        last = verdicts[-1]
        if not last.passed:
            rule = (last.record.rule,) if last.record is not None else None
            return _result(policy, request, last.reason, purpose=purpose, party=party,
                           rule=rule)
    return _result(policy, request, Reason.ALLOWED, purpose=purpose, party=party,
                   rule=("casbin:matcher",))


@dataclass(frozen=True, slots=True)
class CategoryDecision:
    """A request judged category by category (need-to-know per field).

    Args:
        decision: The summary: allowed when a personal category is released (or,
            for a request naming no personal category, when any is released);
            otherwise the reason of the first withheld category. Its rule lists
            the rules that released the released categories.
        released: The categories that passed every check, in request order.
        withheld: ``(category, reason)`` for every other category, in request order.
    """

    decision: Decision
    released: tuple[str, ...]
    withheld: tuple[tuple[str, Reason], ...]

    def detail(self) -> str:
        """Released and withheld categories as compact JSON (the audit event's ``detail``)."""
        withheld = ",".join(f'"{c}":"{r.value}"' for c, r in self.withheld)
        released = ",".join(f'"{c}"' for c in self.released)
        return f'{{"released":[{released}],"withheld":{{{withheld}}}}}'


def decide_categories(
    policy: CompiledPolicy,
    request: Request,
    register: SubjectLookup | None = None,
    *,
    today: date | None = None,
) -> CategoryDecision:
    """Judge each category of a request on its own, in one pass over the compiled tables.

    A category is released exactly when :func:`decide` would allow the same
    request naming that category alone, and withheld with the reason it would give.

    Args:
        policy: The compiled policy.
        request: The request (its categories are judged one by one).
        register: The subject register (None: no subject has an entry).
        today: The day to judge register entries on (default: today, UTC).
    """
    cats = tuple(dict.fromkeys(request.categories))
    if not cats or policy.enforcer is not None:
        return _each_by_decide(policy, request, cats, register, today)
    party, grants = _party_and_grants(policy, request)
    if party is None:
        return _summary(policy, request, cats, {},
                        dict.fromkeys(cats, (Reason.UNKNOWN_CALLER, None)), purpose=None,
                        party=None)
    purpose = policy.purposes.get(request.purpose)
    if purpose is None or not purpose.declarable:
        return _summary(policy, request, cats, {},
                        dict.fromkeys(cats, (Reason.UNKNOWN_PURPOSE, None)), purpose=None,
                        party=party)
    if grants is None:
        grants = policy.grants.get((request.caller, purpose.key))
    action = request.action.value
    subject = request.subject
    state = register.lookup(subject) if subject is not None and register is not None else None
    register_verdict: dict[bool, tuple[Reason, tuple[str, ...] | None, str | None]] = {}
    released: dict[str, tuple[str, ...]] = {}
    withheld: dict[str, tuple[Reason, tuple[str, ...] | None]] = {}
    for key in cats:
        node = policy.categories.get(key)
        reason: Reason | None = None
        found: tuple[str, ...] | None = None
        personal = key != AGGREGATED
        if node is None:
            reason = Reason.UNKNOWN_CATEGORY
        elif node.special:
            reason = Reason.SPECIAL_CATEGORY
        elif not grants:
            reason = Reason.PURPOSE_NOT_GRANTED
        elif personal and key not in purpose.ceiling:
            reason = Reason.CATEGORY_NOT_IN_PURPOSE
        else:
            if not personal:
                found = _AGGREGATED_RULE if request.action is Action.READ else None
            else:
                for ancestor in node.ancestors:
                    found = grants.get((ancestor, action))
                    if found is not None:
                        break
            if found is None:
                reason = Reason.CATEGORY_NOT_GRANTED
            elif personal and not party.transfer_safe:
                reason = Reason.TRANSFER_NOT_SAFEGUARDED
        if reason is not None:
            withheld[key] = (reason, None)
            continue
        assert found is not None
        verdict = register_verdict.get(personal)
        if verdict is None:
            verdict = register_verdict[personal] = _register_verdict(
                policy, purpose, state, subject=subject, personal=personal, today=today)
        if verdict[0] is not Reason.ALLOWED:
            withheld[key] = (verdict[0], verdict[1])
        else:
            released[key] = found if verdict[2] is None else (*found, verdict[2])
    return _summary(policy, request, cats, released, withheld, purpose=purpose, party=party)


def _register_verdict(
    policy: CompiledPolicy,
    purpose: Purpose,
    state: State | None,
    *,
    subject: str | None,
    personal: bool,
    today: date | None,
) -> tuple[Reason, tuple[str, ...] | None, str | None]:
    """Checks 9-13 for categories that are (or are not) personal data.

    Returns (reason, refusing rule, consent rule to add to a release).
    """
    if state is None and (subject is None or not purpose.consent_only):
        if purpose.consent_only:
            return Reason.CONSENT_REQUIRED, None, None
        return Reason.ALLOWED, None, None
    verdicts = register_checks(state or (), purpose, personal=personal,
                               today=today or utc_today(), survival=policy.survival)
    last = verdicts[-1]
    if not last.passed:
        return last.reason, (last.record.rule,) if last.record is not None else None, None
    consent = verdicts[0].record
    return Reason.ALLOWED, None, consent.rule if consent is not None else None


def _summary(
    policy: CompiledPolicy,
    request: Request,
    cats: tuple[str, ...],
    released: Mapping[str, tuple[str, ...]],
    withheld: Mapping[str, tuple[Reason, tuple[str, ...] | None]],
    *,
    purpose: Purpose | None,
    party: Party | None,
) -> CategoryDecision:
    """The summary decision of a per-category judgement."""
    personal = [c for c in cats if c != AGGREGATED]
    if any(c in released for c in personal) or (not personal and released):
        rules = tuple(dict.fromkeys(r for c in cats if c in released for r in released[c]))
        decision = _result(policy, request, Reason.ALLOWED, purpose=purpose, party=party,
                           rule=rules)
    else:
        first = next((c for c in cats if c != AGGREGATED and c in withheld),
                     next(iter(withheld), None))
        reason, rule = withheld[first] if first is not None else (Reason.MALFORMED_REQUEST,
                                                                   None)
        decision = _result(policy, request, reason, purpose=purpose, party=party, rule=rule)
    return CategoryDecision(
        decision,
        tuple(c for c in cats if c in released),
        tuple((c, withheld[c][0]) for c in cats if c in withheld),
    )


def _each_by_decide(
    policy: CompiledPolicy,
    request: Request,
    cats: tuple[str, ...],
    register: SubjectLookup | None,
    today: date | None,
) -> CategoryDecision:
    """Per-category judgement by one :func:`decide` per category (casbin's slow path)."""
    if not cats:
        decision = _result(policy, request, Reason.MALFORMED_REQUEST)
        return CategoryDecision(decision, (), ())
    released: dict[str, tuple[str, ...]] = {}
    withheld: dict[str, tuple[Reason, tuple[str, ...] | None]] = {}
    for key in cats:
        one = _judge(policy, Request(request.caller, request.purpose, (key,), request.action,
                                     request.subject), None, register, today)
        if one.allowed:
            released[key] = one.rule
        else:
            withheld[key] = (one.reason, one.rule)
    return _summary(policy, request, cats, released, withheld,
                    purpose=policy.purposes.get(request.purpose),
                    party=policy.parties.get(request.caller))
