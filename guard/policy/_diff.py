"""The semantic access delta between two compiled policies.

Every (caller, declarable purpose, category node, action) is decided in both
policies with ``guard.engine.decide``; pairs of caller and purpose whose
inputs are identical in both (party, grants, purpose, category tree) are
skipped, since they cannot decide differently. A move in a tree, a changed
ceiling or a new adequacy entry shows up as access, not as text.
"""

from __future__ import annotations

import subprocess
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from guard._errors import PolicyError
from guard._types import Action, Request
from guard.engine import decide
from guard.policy._compiled import ADEQUATE, CompiledPolicy
from guard.policy._source import MODEL_FILE, RULES_FILE, PolicySource

if TYPE_CHECKING:
    from middleware.fields import FieldPlan
    from middleware.routes import RouteRule


@dataclass(frozen=True, slots=True)
class AccessChange:
    """One (caller, purpose, category, action) that became allowed or denied.

    ``covers`` counts the sub-categories folded into this line because they
    changed the same way.
    """

    caller: str
    purpose: str
    category: str
    action: str
    allowed: bool  # the new state
    old_reason: str
    new_reason: str
    covers: int = 0

    def to_dict(self) -> dict[str, object]:
        """JSON-ready."""
        return {
            "caller": self.caller, "purpose": self.purpose, "category": self.category,
            "action": self.action, "change": "allowed" if self.allowed else "denied",
            "old_reason": self.old_reason, "new_reason": self.new_reason,
            "subcategories": self.covers,
        }


@dataclass(frozen=True, slots=True)
class FactChange:
    """A change to a ceiling, lawful basis, party, country, mechanism or the adequacy list."""

    kind: str
    subject: str
    old: str
    new: str

    def to_dict(self) -> dict[str, str]:
        """JSON-ready."""
        return {"kind": self.kind, "subject": self.subject, "old": self.old, "new": self.new}


@dataclass(frozen=True, slots=True)
class PolicyDiff:
    """What changes between two policies, in access and in the facts behind it."""

    old_version: str
    new_version: str
    access: tuple[AccessChange, ...]
    facts: tuple[FactChange, ...]

    @property
    def empty(self) -> bool:
        """True when nobody gains or loses anything and no fact changed."""
        return not self.access and not self.facts

    def by_caller(self) -> dict[str, list[AccessChange]]:
        """Access changes grouped by caller, callers sorted."""
        grouped: dict[str, list[AccessChange]] = defaultdict(list)
        for change in self.access:
            grouped[change.caller].append(change)
        return dict(sorted(grouped.items()))


def _tree(policy: CompiledPolicy) -> dict[str, tuple[tuple[str, ...], bool]]:
    return {k: (c.ancestors, c.special) for k, c in policy.categories.items()}


def _party(policy: CompiledPolicy, caller: str) -> tuple[object, ...] | None:
    party = policy.parties.get(caller)
    if party is None:
        return None
    return (party.party_type, party.country, tuple(sorted(party.mechanisms)),
            party.transfer_safe)


def _purpose(policy: CompiledPolicy, key: str) -> tuple[object, ...] | None:
    purpose = policy.purposes.get(key)
    if purpose is None:
        return None
    return (purpose.declarable, tuple(sorted(purpose.bases)), purpose.ceiling,
            purpose.ancestors)


def _granted(policy: CompiledPolicy, caller: str, purpose: str) -> frozenset[tuple[str, str]]:
    return frozenset(policy.grants.get((caller, purpose), {}))


def _children(policy: CompiledPolicy) -> dict[str, list[str]]:
    children: dict[str, list[str]] = defaultdict(list)
    for key, cat in policy.categories.items():
        if len(cat.ancestors) > 1:
            children[cat.ancestors[1]].append(key)
    return children


def _fold(changed: dict[str, AccessChange], old: CompiledPolicy,
          new: CompiledPolicy) -> list[AccessChange]:
    """Report a node once for itself and every descendant that changed the same way."""
    trees = (new, old) if next(iter(changed.values())).allowed else (old, new)
    kids = [_children(t) for t in trees]

    def subtree(key: str) -> set[str]:
        nodes, stack = set(), [key]
        while stack:
            node = stack.pop()
            if node not in nodes:
                nodes.add(node)
                for k in kids:
                    stack.extend(k.get(node, ()))
        return nodes

    full = {key: subtree(key) <= changed.keys() for key in changed}

    def parent(key: str) -> str | None:
        for tree in trees:
            cat = tree.categories.get(key)
            if cat is not None:
                return cat.ancestors[1] if len(cat.ancestors) > 1 else None
        return None

    out = []
    for key, change in sorted(changed.items()):
        up = parent(key)
        if up is not None and full.get(up, False):
            continue
        covers = len(subtree(key)) - 1 if full[key] else 0
        out.append(AccessChange(change.caller, change.purpose, key, change.action,
                                change.allowed, change.old_reason, change.new_reason, covers))
    return out


def _access(old: CompiledPolicy, new: CompiledPolicy) -> list[AccessChange]:
    callers = sorted(set(old.parties) | set(new.parties))
    purposes = sorted({k for k, p in old.purposes.items() if p.declarable}
                      | {k for k, p in new.purposes.items() if p.declarable})
    categories = sorted(set(old.categories) | set(new.categories))
    # Shortcuts hold for the compiled tables; a policy decided by casbin gets no shortcut.
    fast = old.compiled and new.compiled
    same_tree = fast and _tree(old) == _tree(new)
    found: list[AccessChange] = []
    for caller in callers:
        same_party = _party(old, caller) == _party(new, caller)
        for purpose in purposes:
            was, now = _granted(old, caller, purpose), _granted(new, caller, purpose)
            if fast and not was and not now:
                continue  # purpose_not_granted (or worse) in both
            if (same_tree and same_party and was == now
                    and _purpose(old, purpose) == _purpose(new, purpose)):
                continue
            for action in Action:
                changed: dict[str, AccessChange] = {}
                for category in categories:
                    request = Request(caller, purpose, (category,), action)
                    before, after = decide(old, request), decide(new, request)
                    if before.allowed != after.allowed:
                        changed[category] = AccessChange(
                            caller, purpose, category, action.value, after.allowed,
                            before.reason.value, after.reason.value)
                for allowed in (True, False):
                    part = {k: v for k, v in changed.items() if v.allowed is allowed}
                    if part:
                        found.extend(_fold(part, old, new))
    return found


def _adequate(policy: CompiledPolicy) -> set[str]:
    return {row.values[0] for row in policy.rows
            if row.ptype == "g5" and len(row.values) == 2 and row.values[1] == ADEQUATE}


def _text(values: object) -> str:
    if values is None:
        return "-"
    if isinstance(values, (tuple, list, set, frozenset)):
        return ", ".join(sorted(str(v) for v in values)) or "-"
    return str(values)


class _Facts:
    """Collects the facts that differ, as text."""

    __slots__ = ("found",)

    def __init__(self) -> None:
        self.found: list[FactChange] = []

    def note(self, kind: str, subject: str, before: object, after: object) -> None:
        if _text(before) != _text(after):
            self.found.append(FactChange(kind, subject, _text(before), _text(after)))


def _tree_facts(facts: _Facts, old: CompiledPolicy, new: CompiledPolicy) -> None:
    for key in sorted(set(old.categories) | set(new.categories)):
        was, now = old.categories.get(key), new.categories.get(key)
        facts.note("category", key, was and " < ".join(was.ancestors),
                   now and " < ".join(now.ancestors))
    for key in sorted(set(old.purposes) | set(new.purposes)):
        before, after = old.purposes.get(key), new.purposes.get(key)
        facts.note("purpose", key, before and " < ".join(before.ancestors),
                   after and " < ".join(after.ancestors))
        facts.note("ceiling", key, before and before.ceiling_roots, after and after.ceiling_roots)
        facts.note("lawful basis", key, before and before.bases, after and after.bases)
    for key in sorted(set(old.survival) | set(new.survival)):
        kept, changed = old.survival.get(key), new.survival.get(key)
        facts.note("survival after the end", key, kept and kept.period,
                   changed and changed.period)


def _party_facts(facts: _Facts, old: CompiledPolicy, new: CompiledPolicy) -> None:
    for caller in sorted(set(old.parties) | set(new.parties)):
        was, now = old.parties.get(caller), new.parties.get(caller)
        if was is None or now is None:
            facts.note("party", caller, was and was.party_type, now and now.party_type)
            continue
        facts.note("party type", caller, was.party_type, now.party_type)
        facts.note("country", caller, was.country, now.country)
        facts.note("mechanism", caller, was.mechanisms, now.mechanisms)
    facts.note("adequacy", "adequate countries", _adequate(old), _adequate(new))


def _field_paths(plan: FieldPlan, prefix: str = "") -> list[str]:
    out = []
    for rule in plan.rules:
        path = prefix + rule.name
        if rule.inner is not None and rule.inner.rules:
            out += _field_paths(rule.inner, path + ".")
        else:  # a leaf: categorised, or public (a value with no fields)
            out.append(f"{path}={rule.category.key if rule.category else 'public'}")
    return out


def _route_text(rule: RouteRule) -> str:
    """What a route row declares, spelled one way (its method and template apart)."""
    if rule.public:
        return "public"
    words = [" ".join(sorted(rule.categories)), rule.action.value]  # a set, in any order
    if rule.subject:
        words.append(f"subject {rule.subject}")
    if rule.mode != "deny":
        words.append(rule.mode)
    if rule.fields is not None:
        words += sorted(_field_paths(rule.fields))
    return " ".join(words)


def _route_facts(facts: _Facts, old: Sequence[RouteRule], new: Sequence[RouteRule]) -> None:
    """Each route row added, removed or declared otherwise, and rows that changed order
    (the first row that matches wins)."""
    was = {f"{r.method} {r.template}": _route_text(r) for r in old}
    now = {f"{r.method} {r.template}": _route_text(r) for r in new}
    for key in sorted(was.keys() | now.keys()):
        facts.note("route", key, was.get(key), now.get(key))
    before = [key for key in was if key in now]
    after = [key for key in now if key in was]
    if before != after:
        moved = [key for key, other in zip(before, after, strict=True) if key != other]
        facts.note("route order", "routes.csv", ", ".join(k for k in before if k in moved),
                   ", ".join(k for k in after if k in moved))


def diff_policies(old: CompiledPolicy, new: CompiledPolicy,
                  routes: tuple[Sequence[RouteRule], Sequence[RouteRule]] | None = None,
                  ) -> PolicyDiff:
    """The access delta from ``old`` to ``new`` and the changed facts behind it.

    Args:
        old: The policy before.
        new: The policy after.
        routes: The route rows before and after (routes.csv): a row added, removed or
            declared otherwise, and rows in another order, are facts.
    """
    facts = _Facts()
    _tree_facts(facts, old, new)
    _party_facts(facts, old, new)
    if routes is not None:
        _route_facts(facts, *routes)
    return PolicyDiff(old.version, new.version, tuple(_access(old, new)), tuple(facts.found))


def _reason_note(change: AccessChange) -> str:
    return f"{change.old_reason} -> {change.new_reason}"


def render_text(diff: PolicyDiff, old_name: str, new_name: str) -> str:
    """Plain text, one change a line, grouped by caller."""
    lines = [f"policy diff {old_name} ({diff.old_version}) -> {new_name} ({diff.new_version})"]
    if diff.empty:
        return "\n".join([*lines, "no change in access or facts"])
    for caller, changes in diff.by_caller().items():
        lines.append(f"{caller}:")
        for c in changes:
            sign = "+" if c.allowed else "-"
            more = f" (+{c.covers} sub-categories)" if c.covers else ""
            lines.append(f"  {sign} {c.action:5} {c.purpose} / {c.category}{more}  "
                         f"[{_reason_note(c)}]")
    if diff.facts:
        lines.append("facts:")
        lines += [f"  {f.kind} {f.subject}: {f.old} -> {f.new}" for f in diff.facts]
    gained = sum(c.allowed for c in diff.access)
    lines.append(f"{gained} access(es) gained, {len(diff.access) - gained} lost, "
                 f"{len(diff.facts)} fact(s) changed")
    return "\n".join(lines)


def render_markdown(diff: PolicyDiff, old_name: str, new_name: str) -> str:
    """Markdown for a pull-request comment."""
    gained = sum(c.allowed for c in diff.access)
    lines = [f"### Policy access diff: `{old_name}` → `{new_name}`", "",
             f"{gained} access(es) gained, {len(diff.access) - gained} lost, "
             f"{len(diff.facts)} fact(s) changed "
             f"(`{diff.old_version}` → `{diff.new_version}`)."]
    if diff.empty:
        return "\n".join([*lines, "", "No change in access."])
    for caller, changes in diff.by_caller().items():
        lines += ["", f"#### `{caller}`", "",
                  "| change | action | purpose | category | reason before → after |",
                  "| --- | --- | --- | --- | --- |"]
        for c in changes:
            more = f" (+{c.covers} sub-categories)" if c.covers else ""
            lines.append(f"| {'**allowed**' if c.allowed else '**denied**'} | {c.action} | "
                         f"`{c.purpose}` | `{c.category}`{more} | "
                         f"{c.old_reason} → {c.new_reason} |")
    if diff.facts:
        lines += ["", "#### Facts", "", "| what | of | before | after |",
                  "| --- | --- | --- | --- |"]
        lines += [f"| {f.kind} | `{f.subject}` | {f.old} | {f.new} |" for f in diff.facts]
    return "\n".join(lines)


def to_json(diff: PolicyDiff, old_name: str, new_name: str) -> dict[str, object]:
    """JSON-ready mapping."""
    return {
        "old": {"name": old_name, "version": diff.old_version},
        "new": {"name": new_name, "version": diff.new_version},
        "access": {caller: [c.to_dict() for c in changes]
                   for caller, changes in diff.by_caller().items()},
        "facts": [f.to_dict() for f in diff.facts],
    }



def read_revision(revision: str, path: str = "policies", cwd: Path | None = None) -> PolicySource:
    """model.conf and rules.csv of ``path`` (relative to the repository root) at ``revision``.

    Raises:
        PolicyError: not in a git repository, unknown revision, or no policy there.
    """
    texts = read_revision_files(revision, path, (MODEL_FILE, RULES_FILE), cwd)
    prefix = path.strip("/")
    if texts[0] is None or texts[1] is None:
        missing = MODEL_FILE if texts[0] is None else RULES_FILE
        raise PolicyError(f"{revision} has no {prefix}/{missing}",
                          hint="use --path to name the policy folder in the repository")
    return PolicySource(texts[0], texts[1], f"{revision}:{prefix}/{MODEL_FILE}",
                        f"{revision}:{prefix}/{RULES_FILE}")


def read_revision_files(revision: str, path: str, names: Sequence[str],
                        cwd: Path | None = None) -> list[str | None]:
    """The text of each file ``names`` in ``path`` at ``revision`` (None: no such file).

    Raises:
        PolicyError: not in a git repository, or an unknown revision.
    """

    def git(*args: str) -> subprocess.CompletedProcess[str]:
        try:
            return subprocess.run(["git", *args], capture_output=True, text=True, cwd=cwd,
                                  check=False, timeout=60)
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise PolicyError(f"cannot run git: {exc}") from None

    top = git("rev-parse", "--show-toplevel")
    if top.returncode != 0:
        raise PolicyError(f"{revision!r} is neither a policy folder nor a git revision "
                          "(not inside a git repository)")
    root = top.stdout.strip()
    if git("-C", root, "rev-parse", "--verify", "--quiet", f"{revision}^{{commit}}").returncode:
        raise PolicyError(f"unknown revision or folder: {revision}",
                          hint="give a policy folder, a branch, a tag or a commit")
    prefix = path.strip("/")
    texts: list[str | None] = []
    for name in names:
        shown = git("-C", root, "show", f"{revision}:{prefix}/{name}")
        texts.append(shown.stdout if shown.returncode == 0 else None)
    return texts
