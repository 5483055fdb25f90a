"""The shipped specs: package data that resolves by name wherever xception-build is installed.

``xbuild compile xception65``, ``extends: xception41``, ``load_spec("xception")`` and
``build_model("xception41")`` all come here when the name is not an existing file: a path that
exists always wins, so a user's own ``xception.yaml`` in the working folder shadows the shipped
one. Only a bare name (no folder part), with or without ``.yaml``, is looked up; ``specs/x.yaml``
stays a path, so a typo in a path is never silently replaced by a shipped spec.

The files live in ``xception_build/specs/`` (in the checkout a link to the repository's
``specs/``), next to ``spec.schema.json`` that their first line points editors at.
"""

from __future__ import annotations

import difflib
import os
from pathlib import Path

#: where the shipped specs are, in a checkout and in an installed wheel alike
SHIPPED_DIR = (Path(__file__).parent / "specs").resolve()
SUFFIX = ".yaml"


def shipped_specs() -> dict[str, Path]:
    """Shipped spec name -> file, sorted by name."""
    return {path.stem: path for path in sorted(SHIPPED_DIR.glob(f"*{SUFFIX}"))}


def _bare_name(reference: str | os.PathLike[str]) -> str | None:
    """``xception65`` for ``xception65`` or ``xception65.yaml``; ``None`` for anything with a folder."""
    text = os.fspath(reference)
    if not text or "/" in text or os.sep in text or (os.altsep and os.altsep in text):
        return None
    return text.removesuffix(SUFFIX)


def shipped_spec(reference: str | os.PathLike[str]) -> Path | None:
    """The shipped file that a bare name means, or ``None``."""
    name = _bare_name(reference)
    return shipped_specs().get(name) if name is not None else None


def locate(reference: str | os.PathLike[str], folder: Path | None = None) -> Path:
    """The file a spec reference means: ``folder / reference`` (or ``reference``) when it exists,
    else the shipped spec of that name, else the path itself (reading it then says what is wrong)."""
    path = folder / reference if folder is not None else Path(reference)
    try:
        if path.exists():
            return path
    except (OSError, ValueError):  # a name too long, a NUL: reading the path reports it
        return path
    return shipped_spec(reference) or path


def not_found_hint(reference: str | os.PathLike[str]) -> str:
    """What to write instead of a spec reference that names nothing: the closest shipped name and
    the list of them."""
    names = list(shipped_specs())
    name = _bare_name(reference) or Path(reference).stem
    close = difflib.get_close_matches(name, names, n=1, cutoff=0.7)
    suggestion = f"did you mean '{close[0]}'? " if close else ""
    if not names:
        return "give the path of a spec file, e.g. specs/xception.yaml"
    return (f"{suggestion}give the path of a spec file or the name of a shipped spec "
            f"(xbuild list): {', '.join(names)}")
