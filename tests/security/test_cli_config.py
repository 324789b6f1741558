"""Bad configuration stops every command at start, in one line naming the key.

A typo in guard.toml or in a ``GUARD_*`` variable used to be ignored silently: the
guard then ran with a default the operator meant to change (an SQLite audit store
instead of PostgreSQL, no trusted proxies...). The known keys come from the
settings models, so a field added to a model is accepted without touching the check.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from pydantic import BaseModel

from guard._errors import ConfigError
from guard.config import Settings, load_settings
from tests.security.clikit import clean_guard_env, run  # noqa: F401 (autouse)

COMMANDS = [
    ["check", "--caller", "svc:crm", "--purpose", "relationship.management",
     "--category", "contact"],
    ["explain", "--caller", "svc:crm", "--purpose", "relationship.management",
     "--category", "contact"],
    ["policy", "lint"],
    ["policy", "test"],
    ["policy", "ropa"],
    ["audit", "query"],
    ["audit", "verify"],
    ["token", "issue", "--caller", "svc:crm"],
    ["sidecar"],
]


def refused(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
            args: list[str], *names: str) -> None:
    code, out, err = run(monkeypatch, capsys, *args)
    assert code == 2, (args, out, err)
    assert out == ""
    assert err.count("\n") == 1, err
    assert err.startswith("guard: error: ")
    for name in names:
        assert name in err, err


@pytest.mark.parametrize("args", COMMANDS, ids=lambda a: " ".join(a[:2]))
def test_unknown_key_in_guard_toml_stops_every_command(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path,
    args: list[str],
) -> None:
    (tmp_path / "guard.toml").write_text('[audit]\nstroe = "postgresql://db/audit"\n')
    refused(monkeypatch, capsys, args, "guard.toml", "audit.stroe", "did you mean audit.store")


@pytest.mark.parametrize("args", COMMANDS, ids=lambda a: " ".join(a[:2]))
def test_unknown_environment_variable_stops_every_command(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], args: list[str],
) -> None:
    monkeypatch.setenv("GUARD_POLICY_DIR", "/srv/policies")  # one _ where __ was meant
    refused(monkeypatch, capsys, args, "GUARD_POLICY_DIR", "did you mean GUARD_POLICY__DIR")


@pytest.mark.parametrize("args", COMMANDS, ids=lambda a: " ".join(a[:2]))
def test_missing_config_file_stops_every_command(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path,
    args: list[str],
) -> None:
    monkeypatch.setenv("GUARD_CONFIG", str(tmp_path / "gaurd.toml"))
    refused(monkeypatch, capsys, args, "GUARD_CONFIG", "gaurd.toml")


@pytest.mark.parametrize(
    ("toml", "key"),
    [("bogus = 1\n", "bogus"),
     ("[identity]\ntrusted_proxy = []\n", "identity.trusted_proxy"),
     ("[sidecar]\nupstream = 'http://x'\n[sidecar.extra]\na = 1\n", "sidecar.extra"),
     ("[polcy]\ndir = 'p'\n", "polcy")],
)
def test_unknown_keys_at_any_depth_of_the_file(tmp_path: Path, toml: str, key: str) -> None:
    (tmp_path / "guard.toml").write_text(toml)
    with pytest.raises(ConfigError, match=f"unknown setting {key}"):
        load_settings()


@pytest.mark.parametrize(
    ("name", "value"),
    [("GUARD_AUDIT__STOER", "sqlite:///a.db"),
     ("GUARD_BOGUS", "1"),
     ("guard_identity__trusted_proxie", "[]"),
     ("GUARD_AUDIT__STORE__PATH", "x"),
     ("GUARD_AUDIT", '{"store": "sqlite:///a.db", "spol": "x"}')],
)
def test_unknown_environment_keys(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str
) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(ConfigError, match=f"unknown setting in the environment: {name}"):
        load_settings()


def test_a_broken_file_is_one_line(tmp_path: Path) -> None:
    (tmp_path / "guard.toml").write_text("[audit\nstore = 1\n")
    with pytest.raises(ConfigError, match=r"cannot read the configuration guard\.toml"):
        load_settings()


def _fields(model: type[BaseModel], prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    from guard.config import _model_in

    found: list[tuple[str, ...]] = []
    for name, info in model.model_fields.items():
        section = _model_in(info.annotation)
        found.extend(_fields(section, (*prefix, name)) if section else [(*prefix, name)])
    return found


def test_every_declared_field_is_accepted_by_name(tmp_path: Path) -> None:
    """Generic: whatever fields the models declare (new ones included) pass the check."""
    from guard.config import check_sources

    fields = _fields(Settings)
    assert ("audit", "store") in fields
    environ = {"GUARD_" + "__".join(path).upper(): "x" for path in fields}
    environ |= {"GUARD_CONFIG": str(tmp_path / "guard.toml")}
    sections: dict[str, list[str]] = {}
    for path in fields:
        sections.setdefault(".".join(path[:-1]), []).append(path[-1])
    (tmp_path / "guard.toml").write_text("".join(
        (f"[{section}]\n" if section else "") + "".join(f"{key} = 1\n" for key in keys)
        for section, keys in sorted(sections.items())))
    check_sources(environ)  # no ConfigError: values are for pydantic to judge


def test_other_guard_variables_and_dev_null_are_accepted(
    monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GUARD_CONFIG", os.devnull)
    monkeypatch.setenv("GUARD_SIDECAR_SETTINGS_JSON", "{}")
    monkeypatch.setenv("GUARD_AUDIT__STORE", "sqlite:///x.db")
    assert load_settings().audit.store == "sqlite:///x.db"


def test_help_still_works_with_bad_configuration(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("GUARD_BOGUS", "1")
    code, out, _ = run(monkeypatch, capsys, "check", "--help")
    assert code == 0
    assert "--caller" in out


def test_the_middleware_refuses_bad_configuration(monkeypatch: pytest.MonkeyPatch) -> None:
    from starlette.applications import Starlette

    from middleware import GuardMiddleware

    monkeypatch.setenv("GUARD_AUDIT__STOER", "sqlite:///a.db")
    with pytest.raises(ConfigError, match="GUARD_AUDIT__STOER"):
        GuardMiddleware(Starlette())


def test_the_sidecar_refuses_bad_configuration(tmp_path: Path) -> None:
    from middleware.sidecar import create_app

    (tmp_path / "guard.toml").write_text("[sidecar]\nupstream_timout_seconds = 5\n")
    with pytest.raises(ConfigError, match=r"sidecar\.upstream_timout_seconds"):
        create_app()


def test_the_variables_ci_and_the_tests_set_are_accepted() -> None:
    """Every ``GUARD_*`` name .ci/run, scripts/ and the tests read passes the check."""
    import re

    from guard.config import check_sources

    repo = Path(__file__).resolve().parents[2]
    texts = [(repo / ".ci" / "run").read_text()]
    texts += [p.read_text() for p in (repo / "scripts").iterdir() if p.is_file()]
    texts += [p.read_text() for p in (repo / "tests").rglob("*.py")
              if "os.environ" in p.read_text()]
    names = {n for text in texts for n in re.findall(r"\bGUARD_REQUIRE_[A-Z]+\b|"
                                                       r"\bGUARD_[A-Z]+_SCREENSHOTS\b|"
                                                       r"\bGUARD_NGINX\b", text)}
    assert {"GUARD_REQUIRE_POSTGRES", "GUARD_REQUIRE_CHROMIUM"} <= names
    check_sources(dict.fromkeys(names, "1"))


@pytest.mark.parametrize("args", COMMANDS, ids=lambda a: " ".join(a[:2]))
def test_the_removed_thread_writer_is_refused_in_one_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path,
    args: list[str],
) -> None:
    """An old ``audit.writer = "thread"`` must not run the journal silently in its place."""
    (tmp_path / "guard.toml").write_text('[audit]\nwriter = "thread"\n')
    refused(monkeypatch, capsys, args, "guard.toml", "audit.writer was removed", "journal")


@pytest.mark.parametrize(
    ("name", "value", "key"),
    [("GUARD_AUDIT__WRITER", "thread", "audit.writer"),
     ("GUARD_AUDIT__SPOOL", "/var/lib/guard/audit.spool", "audit.spool"),
     ("GUARD_AUDIT", '{"spool": "audit.spool"}', "audit.spool")],
)
def test_removed_settings_in_the_environment_are_refused(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], name: str, value: str,
    key: str,
) -> None:
    monkeypatch.setenv(name, value)
    refused(monkeypatch, capsys, ["audit", "query"], name, f"{key} was removed")
