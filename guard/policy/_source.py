"""Reading the casbin files: where they are, their rows with line and column, their digest."""

from __future__ import annotations

import hashlib
import re
import sys
from dataclasses import dataclass
from pathlib import Path

from casbin.persist.adapter import _extract_tokens

from guard._errors import PolicyError

_HIDDEN_BREAK = re.compile("\r(?!\n)|[\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029]")
"""What ends a line for Python's ``str.splitlines`` but not for git, review pages or
casbin's file adapter (a lone carriage return, and the other line and paragraph breaks)."""

SHIPPED_DIR = Path(__file__).resolve().parent / "shipped"
MODEL_FILE = "model.conf"
RULES_FILE = "rules.csv"


@dataclass(frozen=True, slots=True)
class PolicySource:
    """The two texts a policy is made of, and where they came from."""

    model_text: str
    rules_text: str
    model_origin: str
    rules_origin: str

    @property
    def version(self) -> str:
        """Digest of model and rules: the same texts always give the same version."""
        digest = hashlib.sha256()
        digest.update(self.model_text.encode())
        digest.update(b"\0")
        digest.update(self.rules_text.encode())
        return "sha256:" + digest.hexdigest()[:16]


@dataclass(frozen=True, slots=True)
class Row:
    """One policy line of rules.csv: its type, values, and where it stands."""

    ptype: str
    values: tuple[str, ...]
    line: int
    columns: tuple[int, ...]
    origin: str
    location: str
    """``rules.csv:57`` style reference, used as the decision's ``rule``."""

    def column_of(self, index: int) -> int:
        """1-based column of value ``index`` (0 is the first value after the type)."""
        return self.columns[index + 1] if index + 1 < len(self.columns) else 1


def resolve_policy_dir(explicit: Path | None = None) -> Path:
    """The policy folder: ``explicit``, else ``./policies``, else the shipped copy."""
    if explicit is not None:
        if not explicit.is_dir():
            raise PolicyError(f"policy folder not found: {explicit}")
        return explicit
    local = Path("policies")
    if (local / MODEL_FILE).is_file() and (local / RULES_FILE).is_file():
        return local
    return SHIPPED_DIR


def read_source(policy_dir: Path) -> PolicySource:
    """Read model.conf and rules.csv from a folder."""
    texts: list[str] = []
    for name in (MODEL_FILE, RULES_FILE):
        path = policy_dir / name
        try:
            text = path.read_bytes().decode("utf-8").replace("\r\n", "\n")
            # rules.csv as casbin reads it: a lone \r is no line break (and is refused
            # when the rows are read: refuse_hidden_break); model.conf as read_text does
            texts.append(text if name == RULES_FILE else text.replace("\r", "\n"))
        except FileNotFoundError:
            raise PolicyError(f"{name} not found in {policy_dir}", path=str(path)) from None
        except (OSError, UnicodeDecodeError) as exc:
            raise PolicyError(f"cannot read {name}: {exc}", path=str(path)) from None
    return PolicySource(
        model_text=texts[0],
        rules_text=texts[1],
        model_origin=str(policy_dir / MODEL_FILE),
        rules_origin=str(policy_dir / RULES_FILE),
    )


def _columns(raw: str, tokens: list[str]) -> tuple[int, ...]:
    """1-based start column of each token in the raw line."""
    columns: list[int] = []
    offset = 0
    for token in tokens:
        found = raw.find(token, offset) if token else offset
        found = offset if found < 0 else found
        columns.append(found + 1)
        offset = found + len(token)
    return tuple(columns)


def _split_plain(stripped: str) -> tuple[list[str], list[int]] | None:
    """Tokens and 0-based columns of a line without brackets and without empty values.

    For such a line casbin's tokenizer is a plain split on commas; any other line
    returns None and goes through casbin's own tokenizer.
    """
    if "(" in stripped or "[" in stripped or ")" in stripped or "]" in stripped:
        return None
    tokens: list[str] = []
    columns: list[int] = []
    offset = 0
    for part in stripped.split(","):
        token = part.strip()
        if not token:
            return None
        tokens.append(token)
        columns.append(offset + len(part) - len(part.lstrip()))
        offset += len(part) + 1
    return tokens, columns


def hidden_break(text: str) -> tuple[int, int] | None:
    """``(line, column)`` (1-based) of the first character that ends a line for some
    readers only (:data:`_HIDDEN_BREAK`); None when lines end at ``\n`` alone."""
    found = _HIDDEN_BREAK.search(text)
    if found is None:
        return None
    at = found.start()
    return text.count("\n", 0, at) + 1, at - text.rfind("\n", 0, at)


def refuse_hidden_break(text: str, origin: str) -> None:
    """Raise a PolicyError where ``text`` has a line break only some readers see.

    A row after one would be read by the guard but not by a reviewer (git shows one
    line), so the file is refused.
    """
    bad = hidden_break(text)
    if bad is not None:
        char = text.split("\n")[bad[0] - 1][bad[1] - 1]
        raise PolicyError(f"U+{ord(char):04X} ends a line for some readers only: git and "
                          "review pages show one line where the guard would read two",
                          path=origin, line=bad[0], column=bad[1],
                          hint="remove it; lines end with a line feed")


def parse_rows(text: str, origin: str) -> list[Row]:
    """Split rules text into rows exactly as casbin's file adapter does, keeping positions.

    Lines end at ``\n`` alone, as casbin and git read them (a text with another line
    break is refused before: :func:`refuse_hidden_break`).
    """
    rows: list[Row] = []
    name = Path(origin).name
    for number, raw in enumerate(text.split("\n"), start=1):
        stripped = raw.strip()
        if not stripped or stripped[0] == "#":
            continue
        indent = len(raw) - len(raw.lstrip())
        plain = _split_plain(stripped)
        if plain is not None:
            tokens, offsets = plain
            columns = tuple(c + indent + 1 for c in offsets)
        else:
            tokens = _extract_tokens(stripped)
            if not tokens:
                continue
            columns = tuple(c + indent for c in _columns(stripped, tokens))
        rows.append(
            Row(tokens[0], tuple(map(sys.intern, tokens[1:])), number, columns, origin,
                f"{name}:{number}")
        )
    return rows


def field_starts(line: str) -> list[int]:
    """0-based offset where each comma-separated field begins (commas inside quotes kept)."""
    starts, quoted = [0], False
    for pos, char in enumerate(line):
        if char == '"':
            quoted = not quoted
        elif char == "," and not quoted:
            starts.append(pos + 1)
    return starts


def field_columns(line: str) -> list[int]:
    """1-based column where each comma-separated field's text starts (after spaces)."""
    return [s + len(line[s:]) - len(line[s:].lstrip()) + 1 for s in field_starts(line)]
