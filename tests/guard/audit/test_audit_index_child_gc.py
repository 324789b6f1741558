"""The index child freezes what it holds once started: the collector walks only its new objects.

The child's main (``guard/audit/_follow.py``), run as the service runs it, with its
standard input at its end (so it stops after its start): the objects alive then
are in the collector's permanent generation.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path


def test_the_child_freezes_its_start_up_objects(tmp_path: Path) -> None:
    (tmp_path / "journal").mkdir()
    done = subprocess.run(
        [sys.executable, "-c",
         "import gc, sys\n"
         "from guard.audit._follow import main\n"
         "code = main(sys.argv[1:])\n"
         "print(code, gc.get_freeze_count())",
         str(tmp_path / "journal"), f"sqlite:///{tmp_path / 'audit.db'}"],
        stdin=subprocess.DEVNULL, capture_output=True, text=True, check=False, timeout=120)
    assert done.returncode == 0, done.stderr
    code, frozen = done.stdout.split()
    assert code == "0"
    assert int(frozen) > 10_000  # the modules' objects, at least
