"""Removed settings are refused however the settings are built, in Python too."""

from __future__ import annotations

import pytest

from guard._errors import ConfigError
from guard.config import AuditSettings, Settings


@pytest.mark.parametrize("key", ["writer", "spool"])
def test_a_removed_audit_setting_built_in_python_is_refused_in_one_line(key: str) -> None:
    with pytest.raises(ConfigError) as refused:
        AuditSettings(**{key: "thread"})  # type: ignore[arg-type]
    message = str(refused.value)
    assert message.startswith(f"setting audit.{key} was removed: ")
    assert "journal" in message
    assert "\n" not in message


def test_a_removed_audit_setting_in_a_settings_mapping_is_refused() -> None:
    with pytest.raises(ConfigError, match=r"audit\.writer was removed"):
        Settings.model_validate({"audit": {"store": "sqlite:///a.db", "writer": "process"}})


def test_the_current_audit_settings_are_still_accepted() -> None:
    assert AuditSettings(store="sqlite:///a.db", writer_id="w1").writer_id == "w1"
