"""The auditor's web console: the audit trail in a browser, read-only.

``create_console(settings)`` builds a Starlette app; ``guard console`` serves it,
and the sidecar mounts it when ``console.mount_in_sidecar`` is set. Every asset
(templates, stylesheet, script, the Chart.js build) ships in this package.
"""

from __future__ import annotations

from middleware.console._app import build_console, console_state, create_console

__all__ = ["build_console", "console_state", "create_console"]
