"""Lint of the two trees, the lawful bases and the purpose ceilings."""

from __future__ import annotations

from dataclasses import dataclass, field

from guard.policy._compiled import (
    AGGREGATED,
    CATEGORY_ROOT,
    CEILING_PREFIX,
    LAWFUL_BASES,
    PURPOSE_ROOT,
    SPECIAL,
)
from guard.policy._lint_base import (
    KEY_RE,
    MAX_CATEGORY_LEVELS,
    MAX_PURPOSE_LEVELS,
    SEGMENT_RE,
    Linter,
    Tree,
)
from guard.policy._source import Row

_KEY_HINT = "keys are lower-case ASCII words (a-z, 0-9, _) joined by dots, e.g. contact.email"


@dataclass(slots=True)
class Purposes:
    """What the lint knows about purposes once the tree, bases and ceilings are read."""

    tree: Tree
    bases: dict[str, list[str]] = field(default_factory=dict)
    basis_row: dict[str, Row] = field(default_factory=dict)
    ceiling: dict[str, set[str]] = field(default_factory=dict)  # covered category nodes
    _under: dict[str, tuple[str, ...]] = field(default_factory=dict)

    def declarable(self, key: str) -> bool:
        """A purpose with a lawful basis."""
        return bool(self.bases.get(key))

    def consent_only(self, key: str) -> bool:
        """Declarable, and consent is its only basis."""
        bases = self.bases.get(key, [])
        return bool(bases) and set(bases) <= {"consent"}

    def declarable_under(self, key: str) -> tuple[str, ...]:
        """The declarable purposes at or below ``key``."""
        found = self._under.get(key)
        if found is None:
            found = self._under[key] = tuple(
                p for p in self.tree.subtree(key) if self.declarable(p)
            )
        return found


def lint_tree(lint: Linter, rows: list[Row], root: str, kind: str, max_levels: int) -> Tree:
    """Read tree lines ``child, parent``; report bad keys, shapes, parents, cycles, depth."""
    tree = Tree(root)
    for row in rows:
        child, parent = row.values
        if not KEY_RE.match(child):
            lint.error("invalid-key", row, 0, f"{kind} key {child!r} is not lower-case "
                       "dot-separated ASCII", _KEY_HINT)
            continue
        if parent != root and not KEY_RE.match(parent):
            lint.error("invalid-key", row, 1, f"{kind} key {parent!r} is not lower-case "
                       "dot-separated ASCII", _KEY_HINT)
            continue
        if child == root:
            lint.error("reserved-key", row, 0, f"{root!r} is the root of the {kind} tree, "
                       "not a node", f"declare nodes under it: {row.ptype}, <key>, {root}")
            continue
        if root == PURPOSE_ROOT and child in LAWFUL_BASES:
            lint.error("reserved-key", row, 0, f"purpose key {child!r} is the name of a lawful "
                       "basis", "choose another name; casbin would take it for its basis")
            continue
        if child in tree:
            first = tree.row[child]
            lint.error("two-parents", row, 1, f"{kind} {child!r} already has parent "
                       f"{tree.parent[child]!r} (line {first.line})",
                       "a node has exactly one parent; remove one of the lines")
            continue
        if parent == root:
            if "." in child:
                lint.error("tree-shape", row, 0, f"top-level {kind} {child!r} contains a dot",
                           f"hang it under {child.rsplit('.', 1)[0]!r} instead of {root!r}")
        elif not (child.startswith(parent + ".")
                  and SEGMENT_RE.match(child[len(parent) + 1:])):
            lint.error("tree-shape", row, 0, f"{kind} {child!r} is not a child key of "
                       f"{parent!r}", f"a child's key is its parent's key plus one segment, "
                       f"e.g. {parent}.{child.rsplit('.', 1)[-1]}")
        tree.add(child, parent, row)
    for child, parent in tree.parent.items():
        if parent != root and parent not in tree:
            lint.error("unknown-key", tree.row[child], 1, f"parent {parent!r} of {child!r} is "
                       f"not in the {kind} tree",
                       f"declare it first: {tree.row[child].ptype}, {parent}, {root}")
    _cycles_and_depth(lint, tree, kind, max_levels)
    return tree


def _cycles_and_depth(lint: Linter, tree: Tree, kind: str, max_levels: int) -> None:
    level: dict[str, int] = {tree.root: 0}
    for start in tree.parent:
        path: list[str] = []
        on_path: set[str] = set()
        node = start
        while node not in level:
            if node in on_path:
                cycle = path[path.index(node):]
                lint.error("cycle", tree.row[node], 1, f"{kind} tree has a cycle: "
                           + " -> ".join([*cycle, node]), "a tree cannot loop; fix the parents")
                for member in cycle:
                    level[member] = -1
                break
            path.append(node)
            on_path.add(node)
            up = tree.parent.get(node)
            if up is None:  # an undeclared parent, reported above
                level[node] = 0
                path.pop()
                break
            node = up
        for member in reversed(path):
            if member in level:
                continue
            up_level = level.get(tree.parent[member], -1)
            level[member] = -1 if up_level < 0 else up_level + 1
            if level[member] == max_levels + 1:
                lint.error("tree-too-deep", tree.row[member], 0, f"{kind} {member!r} is "
                           f"{level[member]} levels deep; at most {max_levels} are allowed",
                           "casbin's role hierarchy follows at most 10 links; flatten the tree")


def lint_builtin_categories(lint: Linter, tree: Tree) -> None:
    """``special`` and ``aggregated`` are top-level; ``aggregated`` has no children."""
    for key in (SPECIAL, AGGREGATED):
        if not tree.top_level(key):
            lint.error("missing-builtin-category", None, None, f"the category tree has no "
                       f"top-level {key!r} node", f"add: g, {key}, {CATEGORY_ROOT} "
                       "(the model's matcher relies on it)")
    for child in tree.children.get(AGGREGATED, ()):
        lint.error("aggregated-has-children", tree.row[child], 0, f"{child!r} is under "
                   "'aggregated', which is not personal data and has no sub-categories",
                   "move it to a personal-data category")


def lint_bases(lint: Linter, rows: list[Row], purposes: Purposes) -> None:
    """``g3, purpose, basis``: a known declarable purpose and one of the six bases."""
    tree = purposes.tree
    for row in rows:
        purpose, basis = row.values
        ok = True
        if purpose not in tree:
            lint.error("unknown-key", row, 0, f"purpose {purpose!r} is not in the purpose tree",
                       f"declare it: g2, {purpose}, <parent>")
            ok = False
        elif tree.top_level(purpose):
            lint.error("basis-on-grouping", row, 0, f"{purpose!r} is a grouping node (first "
                       "segment) and cannot have a lawful basis",
                       "give the basis to a purpose under it, e.g. "
                       f"{purpose}.<activity>")
            ok = False
        if basis not in LAWFUL_BASES:
            lint.error("unknown-lawful-basis", row, 1, f"unknown lawful basis {basis!r}",
                       "one of: " + ", ".join(sorted(LAWFUL_BASES)))
            ok = False
        if ok:
            purposes.bases.setdefault(purpose, []).append(basis)
            purposes.basis_row.setdefault(purpose, row)


def lint_ceilings(
    lint: Linter, rows: list[Row], categories: Tree, purposes: Purposes
) -> None:
    """``g, category, ceiling:purpose``: known keys, a declarable purpose, no special."""
    roots: dict[str, list[tuple[str, Row]]] = {}
    for row in rows:
        category, purpose = row.values[0], row.values[1].removeprefix(CEILING_PREFIX)
        if purpose not in purposes.tree:
            lint.error("unknown-key", row, 1, f"ceiling names purpose {purpose!r}, which is "
                       "not in the purpose tree", "check the spelling after 'ceiling:'")
            continue
        if not purposes.declarable(purpose):
            lint.error("ceiling-not-declarable", row, 1, f"{purpose!r} has no lawful basis, "
                       "so it cannot be declared and needs no ceiling",
                       f"give it a basis (g3, {purpose}, <basis>) or move the ceiling to a "
                       "declarable purpose")
            continue
        if category == CATEGORY_ROOT:
            lint.error("ceiling-on-root", row, 0, "a ceiling cannot name the root 'category'",
                       "list the top-level categories the purpose may use")
            continue
        if category not in categories:
            lint.error("unknown-key", row, 0, f"category {category!r} is not in the category "
                       "tree", f"declare it: g, {category}, <parent>")
            continue
        if SPECIAL in categories.ancestors(category):
            lint.error("ceiling-on-special", row, 0, f"{category!r} is a special category, "
                       "which is never collected", "remove this line")
            continue
        if category == AGGREGATED:
            lint.warning("aggregated-in-ceiling", row, 0, "'aggregated' needs no ceiling: "
                         "any caller may read it under any purpose granted to it",
                         "remove this line")
            continue
        roots.setdefault(purpose, []).append((category, row))
    for purpose, listed in roots.items():
        purposes.ceiling[purpose] = {
            node for category, _ in listed for node in categories.subtree(category)
        }
    for purpose in purposes.tree.parent:
        if not purposes.declarable(purpose):
            continue
        if purpose not in purposes.ceiling:
            lint.warning("empty-ceiling", purposes.basis_row[purpose], 0, f"declarable "
                         f"purpose {purpose!r} has no ceiling: every request under it is "
                         "denied", f"add: g, <category>, {CEILING_PREFIX}{purpose}")
            continue
        parent = next((a for a in purposes.tree.ancestors(purpose)[1:]
                       if purposes.declarable(a)), None)
        if parent is None:
            continue
        wider = purposes.ceiling.get(parent, set())
        for category, row in roots[purpose]:
            if category not in wider:
                lint.error("ceiling-wider-than-parent", row, 0, f"{category!r} is in the "
                           f"ceiling of {purpose!r} but not of its parent {parent!r}",
                           f"a child's ceiling is never wider than its parent's: add it to "
                           f"{parent!r} or remove it here")


def lint_groupings(lint: Linter, purposes: Purposes) -> None:
    """Warn about purpose nodes under which nothing can ever be declared."""
    for key, row in purposes.tree.row.items():
        if not purposes.declarable_under(key):
            lint.warning("no-declarable-purpose", row, 0, f"purpose {key!r} has no lawful "
                         "basis and no declarable purpose under it: no request can use it",
                         f"give it a basis (g3, {key}, <basis>) or remove it")


def categories_tree(lint: Linter, rows: list[Row]) -> Tree:
    """The category tree with its checks (depth allows the extra ceiling link)."""
    tree = lint_tree(lint, rows, CATEGORY_ROOT, "category", MAX_CATEGORY_LEVELS)
    lint_builtin_categories(lint, tree)
    return tree


def purposes_tree(lint: Linter, rows: list[Row]) -> Purposes:
    """The purpose tree with its checks."""
    return Purposes(lint_tree(lint, rows, PURPOSE_ROOT, "purpose", MAX_PURPOSE_LEVELS))
