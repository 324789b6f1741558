"""The PostgreSQL fixture starts a real server that answers queries."""

from __future__ import annotations

import psycopg


def test_postgres_server_answers(postgres_url: str) -> None:
    with psycopg.connect(postgres_url) as conn:
        row = conn.execute("SELECT current_database(), version()").fetchone()
    assert row is not None
    assert row[0] == "guard_test"
    assert "PostgreSQL" in row[1]
