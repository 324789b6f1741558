"""``guard policy lint --app module:app``: the Category fields of an app's response models."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from policykit import copy_policy

GUARD = str(Path(sys.executable).with_name("guard"))
APP = '''
from typing import Annotated
from fastapi import FastAPI
from pydantic import BaseModel
from middleware import Category, guarded

class Inner(BaseModel):
    fax: Annotated[str, Category("contact.fax")]

class Record(BaseModel):
    email: Annotated[str, Category("contact.email")]
    inner: list[Inner]

app = FastAPI()

@app.get("/r/{rid}", response_model=Record)
@guarded(subject="rid", mode="minimise")
async def record(rid: str) -> Record: ...
'''
BAD = APP.replace('@guarded(subject="rid", mode="minimise")',
                  '@guarded(categories=["contact"], subject="rid")')


def lint(tmp: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([GUARD, "policy", "lint", "--policy-dir", str(tmp / "policies"),
                           *args], cwd=tmp, capture_output=True, text=True, timeout=60,
                          check=False)


def test_unknown_model_categories_are_warnings_and_bad_declarations_errors(
    tmp_path: Path,
) -> None:
    copy_policy(tmp_path / "policies")
    (tmp_path / "svc_ok.py").write_text(APP)
    (tmp_path / "svc_bad.py").write_text(BAD)
    done = lint(tmp_path, "--app", "svc_ok:app")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "model-category-unknown" in done.stdout
    assert "field inner.fax has category 'contact.fax'" in done.stdout
    assert "contact.email" not in done.stdout
    bad = lint(tmp_path, "--app", "svc_bad:app")
    assert bad.returncode == 1
    assert "app-declaration" in bad.stdout
    assert "disagree with the response model's" in bad.stdout
    missing = lint(tmp_path, "--app", "nowhere:app")
    assert missing.returncode == 2
    assert missing.stderr.startswith("guard: error: --app 'nowhere:app': cannot import")
    assert "Traceback" not in missing.stderr
    assert lint(tmp_path, "--app", "svc_ok").returncode == 2
