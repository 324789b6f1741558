"""PostgreSQL URLs and errors as messages and logs show them (the policy store, the audit store)."""

from __future__ import annotations

import psycopg
from psycopg.conninfo import conninfo_to_dict


def shown_url(url: str) -> str:
    """``url`` as ``postgresql://user@host:port/db``: no password, no other option."""
    try:
        info = conninfo_to_dict(url)
    except psycopg.Error:
        return "<invalid PostgreSQL URL>"
    user, port = info.get("user"), info.get("port")
    return (f"postgresql://{f'{user}@' if user else ''}{info.get('host', '')}"
            f"{f':{port}' if port else ''}/{info.get('dbname', '')}")


def one_line(exc: BaseException) -> str:
    """An exception's message on one line (libpq's span several), else its type's name."""
    return "; ".join(part.strip() for part in str(exc).splitlines() if part.strip()) \
        or type(exc).__name__
