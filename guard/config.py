"""Configuration from ``guard.toml`` and ``GUARD_*`` environment variables.

Every field has a default that runs out of the box: the shipped policy, an
SQLite audit store in the working directory, development keys under ``.guard/``.
Environment variables use ``__`` between section and field, e.g.
``GUARD_AUDIT__STORE=postgresql://...``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, Field, ValidationError, field_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from guard._errors import ConfigError


class PolicySettings(BaseModel):
    """Where the policy comes from."""

    dir: Path | None = None
    """Folder with model.conf and rules.csv; None means ./policies, then the shipped one."""
    source: str = "files"
    """``files`` (watch the folder) or a PostgreSQL URL to load pushed policies from."""
    watch: bool = True


class AuditSettings(BaseModel):
    """Where decisions are recorded."""

    store: str = "sqlite:///audit.db"
    """``sqlite:///PATH`` or ``postgresql://...``."""
    spool: Path | None = None
    """Local spool file; when set, events the store cannot take are spooled, not denied."""
    hmac_key: Path = Path(".guard/subject-hmac.key")
    signing_key: Path = Path(".guard/audit-signing.key")
    checkpoint_every: int = Field(default=1000, ge=1)
    """Sign a checkpoint at least every this many events of a chain."""
    checkpoint_seconds: float = Field(default=60.0, gt=0)
    """... and within this many seconds of a chain's first unsigned event."""
    witness: Path | None = None
    """Append-only file (on another volume) that also receives every signed checkpoint."""
    writer_id: str | None = None
    otlp_endpoint: str | None = None
    writer: Literal["thread", "process"] = "thread"
    """Where events are hashed and written: a thread of this process, or a relay
    process it starts (the service's interpreter then only hands events over)."""


class IdentitySettings(BaseModel):
    """How callers prove who they are."""

    jwks_file: Path | None = None
    hs256_secret_file: Path | None = None
    key_refresh_seconds: float = Field(default=60.0, gt=0)
    """How often the JWKS and HS256 files are checked for changes (a removed key
    stops working, cached tokens included, within this time)."""
    development: bool | None = None
    """Accept tokens signed with the local development key. None (the default):
    only while no identity provider (JWKS, HS256 secret, proxy secret) is configured."""
    dev_key: Path = Path(".guard/dev-token.key")
    audience: str = "purpose-guard"
    issuer: str = "purpose-guard-dev"
    leeway_seconds: int = 30
    token_cache_size: int = Field(default=4096, ge=1)
    """Verified tokens remembered until their ``exp`` (least recently used dropped first)."""
    max_token_bytes: int = Field(default=8192, ge=256, le=65536)
    """A longer ``Authorization`` header is refused (``token_too_large``) unparsed."""
    proxy_secret_file: Path | None = None
    """Secrets (one per line, >= 32 bytes) a reverse proxy sends in
    ``X-Guard-Proxy-Secret`` to assert the caller in ``caller_header``."""
    trusted_proxies: list[str] = Field(default_factory=list)
    """Optional: addresses a proxy must also connect from (needs ``proxy_secret_file``)."""
    caller_header: str = "x-caller"
    purpose_header: str = "x-purpose"


class SidecarSettings(BaseModel):
    """The stand-alone enforcement point."""

    host: str = "127.0.0.1"
    port: int = 8181
    upstream: str | None = None
    """Proxy mode: the URL of the guarded service; None serves only the check and decision API."""
    routes: Path | None = None
    check_path: str = "/v1/check"
    """nginx ``auth_request`` target; Envoy ext_authz appends the original path to it."""
    decide_askers: list[str] = Field(default_factory=list)
    """Callers that may ask ``/v1/decide`` about any caller; others only about themselves."""
    upstream_timeout_seconds: float = Field(default=30.0, gt=0)
    upstream_max_connections: int = Field(default=200, ge=1)
    reload_debounce_ms: int = Field(default=50, ge=0)
    workers: int = Field(default=1, ge=1)
    log_level: Literal["critical", "error", "warning", "info", "debug"] = "info"

    @field_validator("upstream")
    @classmethod
    def _upstream_is_http_url(cls, value: str | None) -> str | None:
        if value is None:
            return None
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"must be an http:// or https:// URL with a host, not {value!r}")
        return value


class ConsoleSettings(BaseModel):
    """The auditor's web console (``guard console``, or mounted in the sidecar)."""

    host: str = "127.0.0.1"
    port: int = Field(default=8282, ge=1, le=65535)
    auditors: list[str] = Field(default_factory=list)
    """Caller ids (a token's ``sub``) that may sign in; empty means nobody may."""
    purpose: str = "rights.request"
    """Purpose declared when an auditor opens a subject's report (the policy decides)."""
    categories: list[str] = Field(default_factory=lambda: ["identity"], min_length=1)
    """Categories declared for that request."""
    grant_minutes: int = Field(default=15, ge=1, le=24 * 60)
    """How long an allowed subject lookup may be viewed and exported."""
    page_size: int = Field(default=50, ge=1, le=500)
    mount_in_sidecar: bool = False
    """Serve the console from the sidecar under ``mount_path``."""
    mount_path: str = "/console"

    @field_validator("mount_path")
    @classmethod
    def _mount_path_is_a_sub_path(cls, value: str) -> str:
        if not value.startswith("/") or value.rstrip("/") == "":
            raise ValueError(f"must be a path below /, e.g. /console, not {value!r}")
        return value.rstrip("/")


class Settings(BaseSettings):
    """All settings; read with :func:`load_settings`."""

    model_config = SettingsConfigDict(
        env_prefix="GUARD_", env_nested_delimiter="__", extra="forbid"
    )

    policy: PolicySettings = Field(default_factory=PolicySettings)
    audit: AuditSettings = Field(default_factory=AuditSettings)
    identity: IdentitySettings = Field(default_factory=IdentitySettings)
    sidecar: SidecarSettings = Field(default_factory=SidecarSettings)
    console: ConsoleSettings = Field(default_factory=ConsoleSettings)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        toml_file = Path(os.environ.get("GUARD_CONFIG", "guard.toml"))
        return (
            init_settings,
            env_settings,
            TomlConfigSettingsSource(settings_cls, toml_file=toml_file),
        )


def load_settings(**overrides: object) -> Settings:
    """Read guard.toml (or ``$GUARD_CONFIG``) and the environment, then apply overrides.

    Raises:
        ConfigError: a value is missing or wrong; the message names the first one.
    """
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"]) or "settings"
        raise ConfigError(
            f"invalid settings: {where}: {first['msg']} ({exc.error_count()} problem(s) in all)"
        ) from None
    except (OSError, ValueError) as exc:  # unreadable or malformed guard.toml
        raise ConfigError(f"cannot read the configuration: {exc}") from None
