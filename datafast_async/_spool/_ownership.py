"""Who holds which journal file: namespaces, locks, and taking over orphaned files.

Every journal file is held open under ``fcntl.flock(LOCK_EX | LOCK_NB)`` for as long as its
journal holds it, so two live clients never touch the same file (a ``flock`` lock belongs to
the open file: two journals of one process exclude each other too). A file that nobody locks
belongs to a client that is gone (closed, crashed, killed): the next journal of the same
namespace takes it over with ``adopt``. Files of other namespaces are listed, never touched.

A file is created under a name that is not a journal's (``.<name>.new``), locked, then renamed:
an adopter never sees an unlocked file that a live client is about to write. A file is deleted
while its lock is held, and an adopter checks after locking that the name still leads to the
file it locked. Every file is opened with ``O_NOFOLLOW`` (a symlink is refused) and
``O_CLOEXEC``; new files are 0600 and a new directory 0700, whatever the umask.

Others must not be able to plant files that a client would send with its key (as ssh and
Vector refuse them): a directory that is not the process's user's own, or that its group or
others may write to (``/tmp`` itself, a mode 1777 directory), is refused (``check_directory``),
and only files owned by that user with no permission for group or others are taken over
(others are listed in ``Adoption.foreign``, never opened for writing, never deleted).

Everything here blocks (the journal calls it from its own thread, or before it starts).
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import stat
from typing import Any

import attrs

from ._records import Parsed, Record, SegmentName, parse_name, read_lines, segment_file

fcntl: Any
try:
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None

__all__ = [
    "Adoption",
    "FileInfo",
    "Held",
    "abandon",
    "adopt",
    "available",
    "check_directory",
    "create",
    "delete",
    "inspect",
    "make_directory",
    "namespace",
    "read_all",
    "release",
    "still_ours",
]

_NOFOLLOW = os.O_CLOEXEC | getattr(os, "O_NOFOLLOW", 0)
# Opening an existing name: a FIFO in its place must not block the open (the descriptor is
# made blocking again once it is known to be a regular file).
_OPEN = _NOFOLLOW | os.O_NONBLOCK


def available() -> bool:
    """Whether this platform has ``flock`` (POSIX)."""
    return fcntl is not None


def namespace(api_key: str, website_id: str | None = None) -> str:
    """Whom a journal belongs to, as a file-name-safe string: the key's kind, the website id
    for an account token (``dft_``), and 8 hex digits of the key's SHA-256, never the key.

    ``df_abc…`` -> ``df-1a2b3c4d``; ``dft_…`` with website ``example.com`` ->
    ``dft-example_com_5e6f70-1a2b3c4d``. The base URL is not part of it.
    """
    fingerprint = hashlib.sha256(api_key.encode("utf-8")).hexdigest()[:8]
    if api_key.startswith("dft_"):
        if not website_id:
            return f"dft-{fingerprint}"
        return f"dft-{_safe(website_id)}-{fingerprint}"
    kind = "df" if api_key.startswith("df_") else "key"
    return f"{kind}-{fingerprint}"


def _safe(text: str) -> str:
    safe = "".join(c if c.isascii() and (c.isalnum() or c in "_-") else "_" for c in text)[:64]
    if safe != text:
        # Two ids that read the same once made safe ("a.b", "a_b") still differ.
        safe += "_" + hashlib.sha256(text.encode("utf-8")).hexdigest()[:6]
    return safe


def make_directory(path: str) -> None:
    """Create ``path`` and its missing parents with mode 0700 (an existing directory is left
    as it is). Raises ``OSError`` (``NotADirectoryError`` when ``path`` is something else)."""
    path = os.path.abspath(path)
    try:
        info = os.stat(path)
    except FileNotFoundError:
        parent = os.path.dirname(path)
        if parent != path:
            make_directory(parent)
        try:
            os.mkdir(path, 0o700)
        except FileExistsError:
            pass  # another process made it meanwhile
        else:
            os.chmod(path, 0o700)  # whatever the umask
        info = os.stat(path)
    if not stat.S_ISDIR(info.st_mode):
        raise NotADirectoryError(errno.ENOTDIR, "not a directory", path)


def check_directory(path: str) -> None:
    """Refuse a directory where another user could plant journal files: one not owned by the
    process's (effective) user, or writable by its group or by others. Raises
    ``PermissionError`` saying which, and how to fix it."""
    info = os.stat(path)
    uid = _euid()
    if uid is not None and info.st_uid != uid:
        raise PermissionError(
            errno.EPERM,
            f"it belongs to uid {info.st_uid}, not to this process's user (uid {uid}): another "
            "user's files are never sent with this key",
            path,
        )
    if info.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        raise PermissionError(
            errno.EPERM,
            f"its mode is {stat.S_IMODE(info.st_mode):04o}: its group or other users can "
            f"write to it and plant goals that would be sent with this key; use a private "
            f"directory (chmod 700 {path})",
            path,
        )


def _euid() -> int | None:
    geteuid = getattr(os, "geteuid", None)
    return None if geteuid is None else int(geteuid())


def _foreign(info: os.stat_result) -> str | None:
    """Why a journal file is not one to take over (not this user's own, or open to its group
    or to others), or ``None``."""
    uid = _euid()
    if uid is not None and info.st_uid != uid:
        return f"owned by uid {info.st_uid}, not by this process's user (uid {uid})"
    if info.st_mode & 0o077:
        return f"mode {stat.S_IMODE(info.st_mode):04o}, not 0600"
    return None


class Foreign(OSError):
    """A journal file that is not this user's own private file: never taken over."""


@attrs.define(eq=False)
class Held:
    """A journal file this process holds open and locked."""

    directory: str
    name: SegmentName
    fd: int
    #: (st_dev, st_ino): to tell whether the name still leads to this file.
    ident: tuple[int, int]

    @property
    def path(self) -> str:
        return os.path.join(self.directory, self.name.file)


def create(directory: str, namespace: str, time_ns: int, pid: int, counter: int) -> Held:
    """A new, empty journal file, 0600, locked. Raises ``OSError``."""
    final = segment_file(namespace, time_ns, pid, counter)
    temp = attrs.evolve(final, new=True)
    temp_path = os.path.join(directory, temp.file)
    fd = os.open(temp_path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_APPEND | _NOFOLLOW, 0o600)
    try:
        os.fchmod(fd, 0o600)  # whatever the umask
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        os.rename(temp_path, os.path.join(directory, final.file))
    except BaseException:
        os.close(fd)
        _unlink_quietly(temp_path)
        raise
    info = os.fstat(fd)
    return Held(directory, final, fd, (info.st_dev, info.st_ino))


def _try_hold(directory: str, name: SegmentName) -> Held | None:
    """Open and lock a file nobody holds; ``None`` if a live holder has it or it is gone.
    Raises ``OSError`` for a file that cannot be opened or locked (or is not a regular file)."""
    path = os.path.join(directory, name.file)
    try:
        fd = os.open(path, os.O_RDWR | os.O_APPEND | _OPEN)
    except FileNotFoundError:
        return None
    held: Held | None = None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise OSError(errno.EINVAL, "not a regular file", path)
        why = _foreign(info)
        if why is not None:
            raise Foreign(errno.EPERM, why, path)
        os.set_blocking(fd, True)  # what it is, for a regular file (and for blockbuster)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return None
        candidate = Held(directory, name, fd, (info.st_dev, info.st_ino))
        # Deleted (or replaced) by its holder before it let go: not a file to take over.
        if _same(candidate):
            held = candidate
        return held
    finally:
        if held is None:
            os.close(fd)


def _same(held: Held) -> bool:
    try:
        info = os.stat(held.path, follow_symlinks=False)
    except FileNotFoundError:
        return False
    return (info.st_dev, info.st_ino) == held.ident


def still_ours(held: Held) -> bool:
    """Whether the file's name still leads to the file held, readable and writable by its
    owner. Raises ``OSError`` when that cannot be told (the directory itself is unreadable)."""
    try:
        info = os.stat(held.path, follow_symlinks=False)
    except FileNotFoundError:
        return False
    return (
        (info.st_dev, info.st_ino) == held.ident
        and stat.S_ISREG(info.st_mode)
        and info.st_mode & 0o600 == 0o600
    )


def read_all(fd: int) -> bytes:
    """The whole content of an open file, read from its start (``pread``)."""
    chunks: list[bytes] = []
    offset = 0
    while True:
        chunk = os.pread(fd, 1 << 20, offset)
        if not chunk:
            return b"".join(chunks)
        chunks.append(chunk)
        offset += len(chunk)


def release(held: Held) -> None:
    """Unlock and close: the file is left for the next journal of its namespace."""
    try:
        fcntl.flock(held.fd, fcntl.LOCK_UN)
    finally:
        os.close(held.fd)


def abandon(held: Held) -> None:
    """Close without unlocking (a forked child's copy: the lock is the parent's)."""
    os.close(held.fd)


def delete(held: Held) -> None:
    """Delete the file while it is still locked, then close it. Raises ``OSError`` (the file
    is then still held)."""
    if _same(held):
        os.unlink(held.path)
    os.close(held.fd)


def _unlink_quietly(path: str) -> None:
    with contextlib.suppress(OSError):
        os.unlink(path)


# -- taking over --------------------------------------------------------------------------------


@attrs.define(eq=False)
class Adopted:
    """A file taken over: held, with the goals in it not yet acknowledged."""

    held: Held
    #: Pending goal ids, in file order (without ids an older file already holds).
    pending: list[str]
    size: int
    #: Whether the file ends with ``\\n``; if not, a newline goes before anything appended.
    ends_clean: bool


@attrs.define
class Adoption:
    """What ``adopt`` found in a directory for one namespace."""

    #: The goals not acknowledged, oldest file first, in file order, each id once.
    records: list[Record] = attrs.field(factory=list)
    #: The files taken over (held, locked) that still have goals pending.
    files: list[Adopted] = attrs.field(factory=list)
    #: Orphaned files deleted because nothing in them was pending.
    deleted: int = 0
    torn: int = 0
    garbage: int = 0
    unknown_acks: int = 0
    duplicates: int = 0
    #: Files of the namespace that could not be read, with why: left alone.
    unreadable: list[tuple[str, str]] = attrs.field(factory=list)
    #: Files of the namespace not owned by this user or open to others, with why: left
    #: alone (another user may have planted them).
    foreign: list[tuple[str, str]] = attrs.field(factory=list)
    #: Files of the namespace that a live client holds: left alone.
    held_elsewhere: list[str] = attrs.field(factory=list)
    #: Files not taken over because the cap (``max_bytes``) was reached: left for later.
    left: list[str] = attrs.field(factory=list)
    #: Journal files of other namespaces (file names): never touched.
    others: list[str] = attrs.field(factory=list)

    @property
    def damaged(self) -> int:
        return self.torn + self.garbage + self.unknown_acks

    @property
    def size(self) -> int:
        return sum(adopted.size for adopted in self.files)

    def release(self) -> None:
        """Let go of every file taken over (unlocked, kept), for a caller that does not
        hand them to a journal."""
        files, self.files = self.files, []
        for adopted in files:
            release(adopted.held)


def _journal_names(directory: str) -> list[SegmentName]:
    names = []
    with os.scandir(directory) as entries:
        for entry in entries:
            name = parse_name(entry.name)
            if name is not None:
                names.append(name)
    names.sort(key=lambda name: (name.namespace, name.order, name.new))
    return names


def adopt(directory: str, namespace: str, *, max_bytes: int | None = None) -> Adoption:
    """Take over every file of ``namespace`` in ``directory`` that no live client holds.

    Returns the goals they hold that are not acknowledged (oldest file first, in file order,
    each id once), and keeps those files locked (``Adoption.files``). Orphaned files with
    nothing pending (and files a crash left half-created) are deleted. Files are taken oldest
    first while their total stays within ``max_bytes`` (the first one always); later ones are
    left for a later start. Damaged lines are skipped and counted; files of other namespaces
    are listed in ``others`` and never opened. Never raises for a file's content or for one
    file it cannot read; raises ``OSError`` if the directory cannot be listed.
    """
    adoption = Adoption()
    seen: set[str] = set()
    total = 0
    full = False
    for name in _journal_names(directory):
        if name.namespace != namespace:
            if not name.new:
                adoption.others.append(name.file)
            continue
        if full and not name.new:
            adoption.left.append(name.file)
            continue
        try:
            held = _try_hold(directory, name)
        except Foreign as exc:
            adoption.foreign.append((name.file, exc.strerror or str(exc)))
            continue
        except OSError as exc:
            adoption.unreadable.append((name.file, exc.strerror or str(exc)))
            continue
        if held is None:
            if not name.new:
                adoption.held_elsewhere.append(name.file)
            continue
        if name.new:  # a crash while it was being created: nothing was ever written to it
            _delete_adopted(held, adoption)
            continue
        try:
            size = os.fstat(held.fd).st_size
            if max_bytes is not None and adoption.files and total + size > max_bytes:
                full = True
                release(held)
                adoption.left.append(name.file)
                continue
            data = read_all(held.fd)
        except OSError as exc:
            release(held)
            adoption.unreadable.append((name.file, exc.strerror or str(exc)))
            continue
        parsed = read_lines(data)
        if parsed.torn:
            # Cut the torn record off (it is counted): the file is whole again, and what is
            # appended to it starts on a line of its own.
            with contextlib.suppress(OSError):
                cut = data.rfind(b"\n") + 1
                os.ftruncate(held.fd, cut)
                size = cut
                parsed.ends_clean = True
        _count(adoption, parsed)
        pending = []
        for record in parsed.pending:
            if record.id in seen:
                adoption.duplicates += 1
                continue
            seen.add(record.id)
            pending.append(record.id)
            adoption.records.append(record)
        if not pending:
            _delete_adopted(held, adoption)
            continue
        total += size
        adoption.files.append(Adopted(held, pending, size, parsed.ends_clean))
    return adoption


def _count(adoption: Adoption, parsed: Parsed) -> None:
    adoption.torn += parsed.torn
    adoption.garbage += parsed.garbage
    adoption.unknown_acks += parsed.unknown_acks
    adoption.duplicates += parsed.duplicates


def _delete_adopted(held: Held, adoption: Adoption) -> None:
    try:
        delete(held)
    except OSError as exc:
        release(held)
        adoption.unreadable.append((held.name.file, f"cannot delete: {exc.strerror or exc}"))
    else:
        adoption.deleted += 1


# -- looking ------------------------------------------------------------------------------------


@attrs.frozen
class FileInfo:
    """One journal file as ``inspect`` sees it (for the command line's ``spool DIR``)."""

    namespace: str
    file: str
    size: int
    #: Goals not acknowledged (``None`` if the file could not be read).
    pending: int | None
    #: When the oldest of them was journaled (Unix time), or ``None``.
    oldest: float | None
    #: Whether a live client holds it.
    locked: bool
    #: Lines skipped as torn or corrupt.
    damaged: int = 0
    #: Why the file could not be read, or ``None``.
    error: str | None = None


def inspect(directory: str) -> list[FileInfo]:
    """Every journal file in ``directory``, by namespace then age; reads them, changes
    nothing. (It takes a shared lock for an instant to tell whether a live client holds a
    file: a client starting at that very instant leaves that file for its next start.)
    Raises ``OSError`` if the directory cannot be listed."""
    infos = []
    for name in _journal_names(directory):
        if name.new:
            continue
        path = os.path.join(directory, name.file)
        try:
            fd = os.open(path, os.O_RDONLY | _OPEN)
        except OSError as exc:
            infos.append(FileInfo(name.namespace, name.file, 0, None, None, False, 0, exc.strerror))
            continue
        try:
            info = os.fstat(fd)
            if not stat.S_ISREG(info.st_mode):
                raise OSError(errno.EINVAL, "not a regular file")
            try:
                fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
                locked = False
            except BlockingIOError:
                locked = True
            parsed = read_lines(read_all(fd))
        except OSError as exc:
            infos.append(FileInfo(name.namespace, name.file, 0, None, None, False, 0, exc.strerror))
            continue
        finally:
            os.close(fd)
        pending = parsed.pending
        infos.append(
            FileInfo(
                name.namespace,
                name.file,
                info.st_size,
                len(pending),
                min((record.at for record in pending), default=None),
                locked,
                # A live writer's last line may be half written right now: not damage.
                parsed.damaged - (parsed.torn if locked else 0),
            )
        )
    return infos
