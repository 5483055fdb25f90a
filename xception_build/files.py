"""Writing outputs so that an interrupted run never leaves a truncated or half-updated file.

Two mechanisms, shared by every command that writes: ``atomic_write`` for one file (temp file
beside it, fsync, rename), and ``staging_dir`` for a set of files written into a temporary
folder inside the output folder and renamed into place by the caller once all are complete.
A failed run also removes the folders it created, so an output folder that did not exist still
does not.
"""

from __future__ import annotations

import os
import secrets
import tempfile
from collections.abc import Sequence
from pathlib import Path


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


def staging_dir(out: Path, prefix: str) -> tuple[Path, list[Path]]:
    """A fresh temporary folder in ``out`` (created with its parents if need be), and the folders
    that were created for it; hand those to :func:`remove_empty` if the run fails.

    Raises ``OSError`` when ``out`` cannot be created or written, leaving nothing behind.
    """
    created = missing_folders(out)
    try:
        out.mkdir(parents=True, exist_ok=True)
        return Path(tempfile.mkdtemp(prefix=prefix, dir=out)), created
    except BaseException:
        remove_empty(created)
        raise
