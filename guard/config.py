"""Configuration from ``guard.toml`` and ``GUARD_*`` environment variables.

Every field has a default that runs out of the box: the shipped policy, an
SQLite audit store in the working directory, development keys under ``.guard/``.
Environment variables use ``__`` between section and field, e.g.
``GUARD_AUDIT__STORE=postgresql://...``. :func:`load_settings` refuses a key
that no settings model defines, in the file or the environment, and a
``GUARD_CONFIG`` that names no file (:func:`check_sources`).
"""

from __future__ import annotations

import difflib
import json
import os
import tomllib
import types
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Annotated, Any, Literal, Union, get_args, get_origin
from urllib.parse import urlsplit

from pydantic import BaseModel, Field, ValidationError, field_validator, model_validator
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
    """``sqlite:///PATH`` or ``postgresql://...``: the index built from the journal."""
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
    journal: Path | None = None
    """The journal folder, where events are durable (one lane per process under it); None:
    ``<file>.journal`` beside an SQLite store, ``.guard/audit-journal/<host>_<port>_<db>``
    for PostgreSQL."""
    journal_segment_mb: int = Field(default=64, ge=1)
    """A journal segment is closed and the next one started at this size (MiB)."""
    reserve_mb: int = Field(default=64, ge=0)
    """Free space (MB) to keep on the journal's filesystem; below it events are refused
    (requests denied ``audit_unavailable``); 0: no reserve."""
    anonymous_refusals_per_source: int = Field(default=20, ge=0)
    """Refusals of requests that prove no caller (a 401, an anonymous malformed request)
    recorded one by one per source address (an IPv6 /64) and reason in each window; the
    rest are counted in one ``refusals`` event per window. 0: every one is recorded."""
    anonymous_refusals_per_window: int = Field(default=600, ge=1)
    """... and at most this many of all sources together in a window."""
    anonymous_refusals_window_seconds: float = Field(default=60.0, gt=0, le=3600)
    """The window's length (seconds)."""
    readiness_probe_seconds: float = Field(default=30.0, gt=0)
    """Readiness writes a ``heartbeat`` event when no event was written for this long."""
    index: Literal["auto", "external"] = "auto"
    """``auto``: each process starts and supervises a child that does what
    ``guard audit index`` does (one at a time indexes); ``external``: ``guard audit
    index`` (one process per journal folder), run beside the service, does it."""
    index_cpus: list[Annotated[int, Field(ge=0)]] = Field(default_factory=list)
    """The CPUs the ``auto`` index child runs on (CPU numbers, e.g. ``[1]``: cores the
    service does not use); empty: the service's own. A CPU this machine lacks stops
    the service's start in one line."""
    index_retry_seconds: float = Field(default=1.0, gt=0, le=60)
    """Seconds between the index's attempts while the store refuses its writes, and before
    the ``auto`` index child that died is started again."""

    @field_validator("index", mode="before")
    @classmethod
    def _no_inline_index(cls, value: Any) -> Any:
        if value == "inline":
            raise ValueError('"inline" (an index thread in each process) was removed: use "auto" '
                             '(a child process of the service) or "external" (guard audit index)')
        return value

    @model_validator(mode="before")
    @classmethod
    def _no_removed_keys(cls, data: Any) -> Any:
        """Refuse a removed key given in Python, as the file and the environment do.

        Raises:
            ConfigError: one line naming the key and what to do instead.
        """
        for key in data if isinstance(data, Mapping) else ():
            if ("audit", key) in REMOVED:
                raise ConfigError(f"setting audit.{key} was removed: {REMOVED['audit', key]}")
        return data


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
    port: int = Field(default=8181, ge=0, le=65535)
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
    gc_freeze: bool = True
    """Freeze the heap built at start-up (``gc.freeze()``) so the collector no longer walks it:
    the sidecar's process, and a service's through ``GuardMiddleware`` (its ``gc_freeze``)."""

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
    session_minutes: int = Field(default=480, ge=1, le=7 * 24 * 60)
    """How long an OIDC sign-in lasts (a restart of the console ends every session)."""
    oidc_issuer: str | None = None
    """OpenID Connect provider (its issuer URL); None: sign-in with service tokens only."""
    oidc_client_id: str = "purpose-guard-console"
    oidc_client_secret_file: Path | None = None
    """The client secret, for a confidential client; None for a public client (PKCE)."""
    oidc_auditor_claim: str = "sub"
    """The ID-token claim compared with ``auditors`` (``sub``, ``email``...)."""
    public_url: str | None = None
    """The console's address as browsers reach it (``https://audit.example/console``): the
    OIDC redirect URI is made from it. None: from each request's own URL (behind a proxy
    that ends TLS that is ``http://``: set this)."""
    secure_cookies: bool = True
    """Mark the sign-in cookies ``Secure`` (browsers send them over HTTPS, and to
    ``http://localhost``, only), also when the console sees plain HTTP behind a proxy that
    ends TLS; false: only when the request itself came over HTTPS (a test client over HTTP)."""

    @field_validator("public_url")
    @classmethod
    def _public_url_is_a_base(cls, value: str | None) -> str | None:
        if value is None:
            return value
        parts = urlsplit(value)
        if parts.scheme not in ("https", "http") or not parts.netloc or parts.query \
                or parts.fragment:
            raise ValueError(f"must be the console's base URL, e.g. https://audit.example/console, "
                             f"not {value!r}")
        return value.rstrip("/")

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
        toml_file = config_file()
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
    check_sources()
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


# ------------------------------------------------------------ unknown keys and files

CONFIG_ENV = "GUARD_CONFIG"
ENV_PREFIX = "GUARD_"
OTHER_VARIABLES = frozenset({
    CONFIG_ENV,
    "GUARD_SIDECAR_SETTINGS_JSON",  # the sidecar hands its settings to its workers
    # tests and benchmarks
    "GUARD_REQUIRE_POSTGRES", "GUARD_REQUIRE_NGINX", "GUARD_REQUIRE_CHROMIUM", "GUARD_NGINX",
    "GUARD_CONSOLE_SCREENSHOTS",
})
"""``GUARD_*`` variables that are not settings and are read by name elsewhere."""

REMOVED: dict[tuple[str, ...], str] = {
    ("audit", "writer"): "every event is appended to the audit journal and the store is "
                         "indexed from it (docs/audit.md); delete the setting",
    ("audit", "spool"): "the audit journal keeps every event the store cannot take yet "
                        "(docs/audit.md); delete the setting",
}
"""Settings that no longer exist, and what to do instead (refused with this line)."""


def config_file() -> Path:
    """The configuration file: ``$GUARD_CONFIG``, else ``guard.toml`` (optional)."""
    return Path(os.environ.get(CONFIG_ENV, "guard.toml"))


def check_sources(environ: Mapping[str, str] | None = None) -> None:
    """Refuse a missing ``$GUARD_CONFIG`` file and any key no settings model defines.

    The known keys come from the fields of :class:`Settings` and its section models,
    so a new field is accepted as soon as it is declared.

    Args:
        environ: The environment to check; ``os.environ`` when None.

    Raises:
        ConfigError: one line naming the file or the key.
    """
    env = os.environ if environ is None else environ
    path = Path(env.get(CONFIG_ENV, "guard.toml"))
    if CONFIG_ENV in env and (not path.exists() or path.is_dir()):
        raise ConfigError(f"{CONFIG_ENV} names {path}, which is not a file"
                          f" (use {os.devnull} for no configuration file)")
    if path.exists() and not path.is_dir():
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
            raise ConfigError(f"cannot read the configuration {path}: {exc}") from None
        for keys in _unknown_keys(Settings, data, ()):
            if keys in REMOVED:
                raise ConfigError(f"{path}: setting {'.'.join(keys)} was removed: "
                                  f"{REMOVED[keys]}")
            raise ConfigError(f"{path}: unknown setting {'.'.join(keys)}{_suggest(keys)}")
    for name, value in env.items():
        upper = name.upper()
        if not upper.startswith(ENV_PREFIX) or upper in OTHER_VARIABLES:
            continue
        keys = tuple(upper[len(ENV_PREFIX):].lower().split("__"))
        bad = _unknown_path(Settings, keys, value)
        if bad in REMOVED:
            raise ConfigError(f"{name}: setting {'.'.join(bad)} was removed: {REMOVED[bad]}")
        if bad == keys:
            raise ConfigError(f"unknown setting in the environment: {name}"
                              f"{_suggest(bad, env=True)}")
        if bad is not None:
            raise ConfigError(f"unknown setting in the environment: {name} "
                              f"(no setting {'.'.join(bad)})")


def _section(model: type[BaseModel], key: str) -> tuple[bool, type[BaseModel] | None]:
    """Whether ``model`` has the field ``key``, and its model type if it is a section."""
    for name, info in model.model_fields.items():
        if key in (name, info.alias, info.validation_alias):
            return True, _model_in(info.annotation)
    return False, None


def _model_in(annotation: Any) -> type[BaseModel] | None:
    """The BaseModel class inside an annotation (``X``, ``X | None``), if any."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    if get_origin(annotation) in (Union, types.UnionType):
        for arg in get_args(annotation):
            found = _model_in(arg)
            if found is not None:
                return found
    return None


def _takes_mapping(model: type[BaseModel], key: str) -> bool:
    info = next((i for n, i in model.model_fields.items() if key in (n, i.alias)), None)
    return info is not None and get_origin(info.annotation) in (dict, Mapping)


def _unknown_keys(
    model: type[BaseModel], data: Mapping[str, Any], prefix: tuple[str, ...]
) -> Iterable[tuple[str, ...]]:
    """Every key path of ``data`` that ``model`` does not define."""
    for key, value in data.items():
        known, section = _section(model, key)
        if not known:
            yield (*prefix, key)
        elif section is not None and isinstance(value, Mapping):
            yield from _unknown_keys(section, value, (*prefix, key))


def _unknown_path(
    model: type[BaseModel], keys: tuple[str, ...], value: str
) -> tuple[str, ...] | None:
    """The first part of a ``GUARD_A__B`` key path that no model defines, or None."""
    for depth, key in enumerate(keys):
        known, section = _section(model, key)
        if not known:
            return keys[: depth + 1]
        if section is None:
            rest = keys[depth + 1:]
            return keys[: depth + 2] if rest and not _takes_mapping(model, key) else None
        model = section
    try:  # a whole section given as JSON
        data = json.loads(value)
    except ValueError:
        return None
    if isinstance(data, dict):
        for bad in _unknown_keys(model, data, keys):
            return bad
    return None


def _all_paths(model: type[BaseModel], prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    paths: list[tuple[str, ...]] = []
    for name, info in model.model_fields.items():
        section = _model_in(info.annotation)
        paths.extend(_all_paths(section, (*prefix, name)) if section else [(*prefix, name)])
    return paths


def _suggest(keys: tuple[str, ...], *, env: bool = False) -> str:
    """`` (did you mean ...?)`` for a near miss of a known key, else empty."""
    paths = _all_paths(Settings)
    if env:
        names = {ENV_PREFIX + "__".join(p).upper(): p for p in paths}
        typed = ENV_PREFIX + "_".join(keys).upper()
        near = difflib.get_close_matches(typed, list(names), n=1, cutoff=0.8)
        return f" (did you mean {near[0]}?)" if near else ""
    near = difflib.get_close_matches(".".join(keys), [".".join(p) for p in paths], n=1,
                                     cutoff=0.75)
    return f" (did you mean {near[0]}?)" if near else ""
