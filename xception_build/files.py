"""Writing outputs so that an interrupted run never leaves a truncated or half-updated file.

Two mechanisms, shared by every command that writes: :func:`atomic_write` for one file (temp file
beside it, fsync, rename), and :func:`staged_output` for a set of files written into a temporary
folder inside the output folder and renamed into place once all are complete. A failed run also
removes the folders it created, so an output folder that did not exist still does not. A file
that others append to by convention (a CI job summary) is appended to with :func:`append_file`,
which leaves the file as it was when the write fails.

Output paths are checked before any work (:func:`check_output_folder`, :func:`check_output_file`),
and a write that the file system refuses (full disk, no permission, read-only) becomes one
:class:`UserError` naming the folder: the same message whichever command was writing.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import secrets
import shutil
import stat
import tempfile
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

from .errors import UserError

#: errno values that mean "this place cannot take the output" (the user's to fix), not a bug
WRITE_ERRORS = frozenset({errno.ENOSPC, errno.EACCES, errno.EPERM, errno.EROFS, errno.EDQUOT, errno.ENOTDIR,
                          errno.EISDIR, errno.EEXIST, errno.ENAMETOOLONG})


def atomic_write(path: str | os.PathLike[str], data: bytes) -> None:
    """Write ``data`` to a temp file next to ``path``, fsync it, then ``os.replace`` it into place.

    A crash leaves either the old file or the new one, never a truncated one.
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    # os.open with 0o666 lets the umask decide the mode, as for any other file the user writes
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def append_file(path: str | os.PathLike[str], data: bytes) -> None:
    """Append ``data`` to ``path`` (created if missing) in one write; on failure, cut the file back.

    Not :func:`atomic_write`: a file others append to (``$GITHUB_STEP_SUMMARY``) keeps its inode,
    mode and owner, and the runner that reads it may hold it open. A failed write (full disk)
    truncates the file to its old length, so what was there before is never lost or corrupted.
    """
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)
    try:
        status = os.fstat(fd)
        regular = stat.S_ISREG(status.st_mode)  # not a pipe or a terminal (--summary /dev/stdout)
        try:
            written = 0
            while written < len(data):  # a regular file takes it in one call; a short write is not lost
                written += os.write(fd, data[written:])
            if regular:
                os.fsync(fd)
        except BaseException:
            if regular:
                os.ftruncate(fd, status.st_size)
            raise
    finally:
        os.close(fd)


def sha256_file(path: str | os.PathLike[str]) -> str:
    """Hex sha256 of a file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def missing_folders(out: Path) -> list[Path]:
    """``out`` and those of its parents that do not exist yet, deepest first: what mkdir will create."""
    missing = []
    for folder in (out, *out.parents):
        if folder.exists() or folder.is_symlink():
            break
        missing.append(folder)
    return missing


def remove_empty(folders: Sequence[Path]) -> None:
    """Undo the mkdir of a failed run, so a folder that did not exist still does not."""
    for folder in folders:
        try:
            folder.rmdir()  # only ever an empty folder
        except OSError:
            return


def _existing_ancestor(path: Path) -> Path:
    for folder in (path, *path.parents):
        if folder.exists():
            return folder
    return Path(".")


def check_output_folder(out: Path, option: str = "--out") -> None:
    """Refuse, before any work, an output folder that cannot be one: an existing file, a folder
    under a file, or a place this process may not write to."""
    existing = _existing_ancestor(out)
    if existing == out and not out.is_dir():
        raise UserError(f"{option} {out}: is a file, expected a folder (existing or to create)")
    if existing != out and not existing.is_dir():
        raise UserError(f"{option} {out}: cannot create a folder there: {existing} is a file")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise UserError(f"{option} {out}: cannot write there: permission denied on {existing}",
                        hint="choose a folder you can write to")


def check_output_file(path: Path, option: str) -> None:
    """Refuse, before any work, an output file that cannot be written: a folder, or a place whose
    nearest existing folder is a file or not writable."""
    if path.is_dir():
        raise UserError(f"{option} {path}: is a folder, expected a file name")
    check_output_folder(path.parent, option=f"{option} {path}: its folder")


def check_appendable_file(path: Path, option: str) -> None:
    """Refuse, before any work, a file that cannot be appended to: a folder, an existing file this
    process may not write, or a new file in a place :func:`check_output_file` refuses."""
    if path.is_dir():
        raise UserError(f"{option} {path}: is a folder, expected a file name")
    if path.exists():
        if not os.access(path, os.W_OK):
            raise UserError(f"{option} {path}: cannot append to it: permission denied",
                            hint="choose a file you can write to")
        return
    check_output_file(path, option)


def write_error(exc: OSError, out: Path) -> UserError:
    """The one message for a write the file system refused."""
    return UserError(f"{out}: writing the output failed: {exc.strerror or exc}",
                     hint="check the free space and permissions of that folder")


class Staging:
    """A temporary folder inside the output folder, and the install of its files into that folder."""

    def __init__(self, path: Path, out: Path) -> None:
        self.path = path
        self.out = out
        self.installing = False  # once set, a failure no longer removes the folders the run created

    def install(self, names: Iterable[str]) -> None:
        """Rename staged files into the output folder (same file system: each rename is atomic)."""
        self.installing = True
        for name in names:
            os.replace(self.path / name, self.out / name)


@contextlib.contextmanager
def staged_output(out: Path, prefix: str = ".xbuild-") -> Iterator[Staging]:
    """Stage files in a fresh temporary folder inside ``out`` (created with its parents if need
    be); the caller installs them with :meth:`Staging.install`. On the way out the temporary folder
    goes, and if nothing was installed, so do the folders created for it. A write the file system
    refuses becomes :func:`write_error`'s ``UserError``."""
    created = missing_folders(out)
    try:
        out.mkdir(parents=True, exist_ok=True)
        stage = Staging(Path(tempfile.mkdtemp(prefix=prefix, dir=out)), out)
    except OSError as exc:
        remove_empty(created)
        if exc.errno in WRITE_ERRORS:
            raise write_error(exc, out) from exc
        raise
    try:
        yield stage
    except OSError as exc:
        if exc.errno in WRITE_ERRORS:
            raise write_error(exc, out) from exc
        raise
    finally:
        shutil.rmtree(stage.path, ignore_errors=True)
        if not stage.installing:
            remove_empty(created)
