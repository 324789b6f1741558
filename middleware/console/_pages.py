"""Jinja2 templates shipped in the package, rendered with autoescaping."""

from __future__ import annotations

from typing import Any

from jinja2 import Environment, PackageLoader, select_autoescape
from starlette.requests import Request
from starlette.responses import HTMLResponse

ENV = Environment(
    loader=PackageLoader("middleware.console", "templates"),
    autoescape=select_autoescape(default=True),
    trim_blocks=True,
    lstrip_blocks=True,
)


def render(request: Request, name: str, context: dict[str, Any],
           status_code: int = 200) -> HTMLResponse:
    """Render a template with ``base`` (the mount path) and ``path`` added."""
    base = str(request.scope.get("root_path", "")).rstrip("/")
    html = ENV.get_template(name).render(base=base, path=request.url.path, **context)
    return HTMLResponse(html, status_code=status_code)
