"""Register fixtures: ``store_url`` and ``pg_url`` come from the shared ``tests/conftest.py``."""
