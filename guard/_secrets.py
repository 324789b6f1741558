"""Local key files: created once with mode 0600, atomically, and read back with one-line errors."""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import stat
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from guard._errors import ConfigError

KEY_FILE_LIMIT = 1 << 20
"""The most bytes a key file may hold (a JWKS of hundreds of keys is far below it)."""


def own_only(info: os.stat_result, folder: os.stat_result | None = None) -> None:
    """Refuse (OSError) a key another local user may have written or put in place.

    A key file must be writable by its owner alone, and lie in a folder of this user's
    or root's: one that others may write too holds only keys of this user's or root's,
    and only with the sticky bit (``/tmp``), without which anyone who may write the
    folder can rename any file of root's in it (one whose text they can read) over the
    key. With ``info`` alone, ``info`` is a folder to make a key in, which must be this
    user's or root's and written by nobody else.

    Args:
        info: The key file's ``stat`` (or the folder's, when ``folder`` is None).
        folder: The ``stat`` of the key file's folder.
    """
    mine = (os.geteuid(), 0)
    where = folder if folder is not None else info
    if where.st_uid not in mine:
        raise OSError(errno.EPERM, f"its folder is owned by uid {where.st_uid}, not by this "
                                   "user or root: another user may have put it there")
    if folder is None:
        if info.st_mode & 0o022:
            raise OSError(errno.EPERM, "its folder is writable by others (mode "
                                       f"{stat.S_IMODE(info.st_mode):o}; chmod go-w)")
        return
    if info.st_mode & 0o022:
        raise OSError(errno.EPERM, "it is writable by others (mode "
                                   f"{stat.S_IMODE(info.st_mode):o}; chmod go-w)")
    if folder.st_mode & 0o022 and not folder.st_mode & stat.S_ISVTX:
        raise OSError(errno.EPERM, "its folder is writable by others without the sticky bit "
                                   f"(mode {stat.S_IMODE(folder.st_mode):o}): another user may "
                                   "rename any file or link in it over the key (chmod go-w, "
                                   "or +t)")
    if folder.st_mode & 0o022 and info.st_uid not in mine:
        raise OSError(errno.EPERM, f"it is owned by uid {info.st_uid} in a folder others "
                                   "may write: another user may have put it there")


def read_key_file(path: Path, limit: int = KEY_FILE_LIMIT, *, private: bool = False) -> bytes:
    """The bytes of a key file: a regular file of at most ``limit`` bytes.

    A pipe, a device (``/dev/zero``), a folder or an oversized file raises OSError
    at once, naming why: a key file is read on the request path when it changes,
    so reading one must neither block nor fill memory.

    Args:
        path: The file (a symbolic link to a regular file is fine).
        limit: The most bytes it may hold.
        private: A key that proves something (the audit keys, the development key, the
            JWKS file, the HS256 and proxy secrets): one another local user may have
            written or put in place is refused (:func:`own_only`), since whoever can
            rewrite it can mint identities or re-key the trail.
    """
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise OSError(errno.EINVAL, "not a regular file")
        if private:
            folder = os.stat(path.parent)
            own_only(info, folder)
            if folder.st_mode & 0o022:  # whoever may write the folder may have put the name
                _name_own(path, info)   # there: a link to a file of root's they chose
            real = _opened_path(fd, path)  # a link: whoever owns the target's folder
            if real.parent != path.parent:  # can swap the file it names, so that folder too
                own_only(info, os.stat(real.parent))
        if info.st_size > limit:
            raise OSError(errno.EFBIG, f"larger than {limit} bytes")
        data = os.read(fd, limit + 1)  # at most the bound, even if it grows meanwhile
        while len(data) <= limit and (more := os.read(fd, limit + 1 - len(data))):
            data += more
        if len(data) > limit:
            raise OSError(errno.EFBIG, f"larger than {limit} bytes")
        return data
    finally:
        os.close(fd)


def _name_own(path: Path, info: os.stat_result) -> None:
    """Refuse (OSError) ``path`` when, in a folder others may write, it is a link another
    user made, or no longer names the file opened (``info``)."""
    entry = os.lstat(path)
    if stat.S_ISLNK(entry.st_mode):
        if entry.st_uid not in (os.geteuid(), 0):
            raise OSError(errno.EPERM, f"it is a link owned by uid {entry.st_uid} in a folder "
                                       "others may write: another user may have put it there")
    elif (entry.st_dev, entry.st_ino) != (info.st_dev, info.st_ino):
        raise OSError(errno.EAGAIN, "it was replaced while it was read")


def _opened_path(fd: int, path: Path) -> Path:
    """Where the file open as ``fd`` lies, every link resolved (``path`` asked for it)."""
    try:  # the very file opened, whatever changed since
        return Path(os.readlink(f"/proc/self/fd/{fd}"))
    except OSError:  # no /proc: resolve the name again
        return Path(os.path.realpath(path))


def write_secret(path: Path, data: bytes) -> None:
    """Create ``path`` (mode 0600, parent 0700) holding ``data``; never overwrite.

    The data is written to a private temporary file and linked into place, so a
    reader never sees a half-written key and two processes starting together
    agree on one.
    """
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    try:  # never a key of its own in a folder someone else made or may write
        own_only(os.stat(path.parent))
    except OSError as exc:
        raise ConfigError(f"will not create the key {path}: {exc.strerror}") from exc
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        with contextlib.suppress(FileExistsError):
            os.link(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def load_ed25519_key(path: Path, what: str, *, create: bool) -> Ed25519PrivateKey:
    """Read an Ed25519 private key (PEM, PKCS#8); with ``create``, generate it on first use.

    Args:
        path: The key file.
        what: How errors name the key, e.g. ``audit signing key``.
        create: Generate the key when the file does not exist.
    """
    if create and not path.exists():
        write_secret(
            path,
            Ed25519PrivateKey.generate().private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            ),
        )
    try:
        loaded = serialization.load_pem_private_key(read_key_file(path, private=True),
                                                    password=None)
    except OSError as exc:
        raise ConfigError(f"cannot read the {what} {path}: {exc.strerror}") from exc
    except ValueError as exc:
        raise ConfigError(f"{what} {path} is not a PEM private key") from exc
    if not isinstance(loaded, Ed25519PrivateKey):
        raise ConfigError(f"{what} {path} is not an Ed25519 key")
    return loaded


def key_id(public: Ed25519PublicKey) -> str:
    """A short fingerprint of a public key: the first 16 hex digits of its SHA-256."""
    raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]
