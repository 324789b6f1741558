"""Example services guarded by purpose-guard (``python -m examples.customers``)."""
