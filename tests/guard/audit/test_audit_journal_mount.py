"""The journal's filesystem: ext4 made without its journal writes the inode at each sync,
and the guard says so when it opens a lane there."""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from guard.audit import _journal
from guard.audit._journal import inode_sync_note, inode_sync_warning, mount_of, open_lane

# /proc/self/mountinfo of the 2-core test VM, with loop-mounted filesystems made by
# mkfs.ext4 (with and without -O ^has_journal) and mkfs.xfs, one mounted lazytime, and a
# tmpfs mounted on a folder whose name holds a space
MOUNTINFO = r"""22 27 0:21 / /proc rw,relatime - proc proc rw
24 27 0:6 / /dev rw,relatime - devtmpfs devtmpfs rw,size=12334432k,nr_inodes=3083608,mode=755
25 24 0:23 / /dev/shm rw,relatime - tmpfs tmpfs rw,size=24683652k
27 1 254:0 / / rw,relatime - ext4 /dev/vda rw,discard,resv_strict,resuid=65534,resgid=65534
30 25 0:27 / /dev/shm rw,relatime - tmpfs tmpfs rw,size=24683652k
42 27 7:0 / /mnt/ur/ext4j rw,relatime - ext4 /dev/loop0 rw
43 27 7:1 / /mnt/ur/ext4n rw,relatime - ext4 /dev/loop1 rw
44 27 7:2 / /mnt/ur/xfs rw,relatime - xfs /dev/loop2 rw,inode64,logbufs=8,logbsize=32k,noquota
45 27 7:3 / /mnt/ur/ext4nl rw,relatime - ext4 /dev/loop3 rw,lazytime
47 27 0:39 / /mnt/ur/with\040space rw,relatime - tmpfs urtmp rw,size=1024k
"""
# /sys/fs/ext4/NAME/journal_task of each ext4 above, by device
JOURNAL_TASK = {"254:0": "<none>", "7:0": "16859", "7:1": "<none>", "7:3": "<none>"}


def note(path: str, dev: int) -> str | None:
    return inode_sync_note(MOUNTINFO, path, dev, JOURNAL_TASK.__getitem__)


def test_the_mount_of_a_path_is_its_devices_with_the_longest_point() -> None:
    assert mount_of(MOUNTINFO, "/var/lib/guard/journal", os.makedev(254, 0)) == \
        _journal.Mount("254:0", "/", "ext4", "/dev/vda")
    assert mount_of(MOUNTINFO, "/mnt/ur/ext4j/lane-0", os.makedev(7, 0)).source == "/dev/loop0"
    # two tmpfs mounted on /dev/shm: the later one holds the path
    assert mount_of(MOUNTINFO, "/dev/shm/j", os.makedev(0, 27)).device == "0:27"
    assert mount_of(MOUNTINFO, "/dev/shmx", os.makedev(0, 6)).point == "/dev"
    assert mount_of(MOUNTINFO, "/mnt/ur/with space/j", os.makedev(0, 39)).point == \
        "/mnt/ur/with space"
    assert mount_of("", "/", 0) is None


def test_ext4_without_its_journal_is_named_with_its_mount_and_the_missing_feature() -> None:
    said = note("/var/lib/guard/journal", os.makedev(254, 0))
    assert said is not None
    assert said.startswith("/dev/vda mounted at / is ext4 made without its journal")
    assert "has_journal" in said
    # lazytime does not help: the change of times moves the change counter, written at once
    assert note("/mnt/ur/ext4nl/j", os.makedev(7, 3)) is not None
    assert note("/mnt/ur/ext4n/j", os.makedev(7, 1)) is not None


def test_ext4_with_its_journal_xfs_and_tmpfs_are_not_named() -> None:
    assert note("/mnt/ur/ext4j/j", os.makedev(7, 0)) is None
    assert note("/mnt/ur/xfs/j", os.makedev(7, 2)) is None
    assert note("/dev/shm/j", os.makedev(0, 27)) is None


def _has_journal(device: str) -> bool | None:
    """dumpe2fs's word on an ext4 device (None: it cannot tell)."""
    if shutil.which("dumpe2fs") is None:
        return None
    out = subprocess.run(["dumpe2fs", "-h", device], capture_output=True, text=True,
                         check=False)
    features = [line for line in out.stdout.splitlines() if line.startswith("Filesystem features")]
    return "has_journal" in features[0] if out.returncode == 0 and features else None


def test_this_machines_answer_agrees_with_dumpe2fs(tmp_path: Path) -> None:
    found = mount_of(Path("/proc/self/mountinfo").read_text(), str(tmp_path.resolve()),
                     os.stat(tmp_path).st_dev)
    assert found is not None
    said = inode_sync_warning(tmp_path)
    if found.fstype != "ext4":
        assert said is None
        return
    journal = _has_journal(found.source)
    if journal is None:  # dumpe2fs may not read the device: jbd2 lists the journals in use
        name = os.path.basename(os.readlink(f"/sys/dev/block/{found.device}"))
        journal = any(Path("/proc/fs/jbd2").glob(f"{name}-*"))
    assert (said is None) == journal, said


@pytest.fixture
def ext4_mounts(tmp_path: Path) -> Iterator[dict[str, Path]]:
    """Two small ext4 filesystems, ``journalled`` and ``bare`` (made without their journal),
    loop-mounted (root)."""
    if os.geteuid() != 0 or shutil.which("mkfs.ext4") is None:
        pytest.skip("needs root and mkfs.ext4 to loop-mount a filesystem")
    mounted: dict[str, Path] = {}
    try:
        for name, options in (("journalled", []), ("bare", ["-O", "^has_journal"])):
            image, point = tmp_path / f"{name}.img", tmp_path / name
            image.write_bytes(b"")
            os.truncate(image, 32 << 20)
            subprocess.run(["mkfs.ext4", "-q", "-F", *options, str(image)], check=True)
            point.mkdir()
            done = subprocess.run(["mount", "-o", "loop", str(image), str(point)],
                                  capture_output=True, text=True, check=False)
            if done.returncode != 0:
                pytest.skip(f"cannot loop-mount here: {done.stderr.strip()}")
            mounted[name] = point
        yield mounted
    finally:
        for point in mounted.values():
            subprocess.run(["umount", str(point)], check=False)


def test_a_lane_on_ext4_without_its_journal_is_logged_once_with_its_mount(
        ext4_mounts: dict[str, Path], caplog: pytest.LogCaptureFixture,
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_journal, "_WARNED", set())
    caplog.set_level(logging.WARNING, logger="guard.audit")
    for name in ("journalled", "bare", "bare"):
        open_lane(ext4_mounts[name] / "journal").close()
    lines = [r.getMessage() for r in caplog.records if r.name == "guard.audit"]
    assert len(lines) == 1, lines
    assert f"mounted at {ext4_mounts['bare']} is ext4 made without its journal" in lines[0]
    assert str(ext4_mounts["journalled"]) not in lines[0]
    # dumpe2fs, reading the filesystems themselves, agrees
    mountinfo = Path("/proc/self/mountinfo").read_text()
    for name, point in ext4_mounts.items():
        found = mount_of(mountinfo, str(point), os.stat(point).st_dev)
        assert found is not None
        assert _has_journal(found.source) in {name == "journalled", None}


def test_a_mount_point_that_is_not_utf8_neither_stops_a_lane_nor_hides_the_mount(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # mountinfo escapes blanks and backslashes only: other bytes of a mount point come raw
    dev = os.stat(tmp_path).st_dev
    line = f"99 27 {os.major(dev)}:{os.minor(dev)} / {tmp_path.resolve()} rw - ext4 /dev/x rw\n"
    mountinfo = tmp_path / "mountinfo"
    mountinfo.write_bytes(b"98 27 7:9 / /mnt/caf\xe9 rw - ext4 /dev/loop9 rw\n"
                          + line.encode())
    monkeypatch.setattr(_journal, "MOUNTINFO", mountinfo)
    monkeypatch.setattr(_journal, "_journal_task", lambda device: "<none>")
    said = inode_sync_warning(tmp_path)
    assert said is not None
    assert said.startswith(f"/dev/x mounted at {tmp_path.resolve()} ")
    open_lane(tmp_path / "journal").close()  # before: UnicodeDecodeError, no lane
