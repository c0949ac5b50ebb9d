"""Files written atomically and never silently overwritten, and JSON read with one error style.

Every output of FemurSeg goes through :func:`atomic_path`: written under a temporary name beside
the target, renamed into place only when complete, and an existing file is refused unless
``overwrite``.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from pathlib import Path
from typing import Iterator, Union

from .errors import OutputExistsError

PathLike = Union[str, os.PathLike]


# ----------------------------------------------------------------------------------------------
# Writing: never silently overwrite, always atomic


def check_writable(path: PathLike, overwrite: bool) -> Path:
    """Refuse an existing ``path`` unless ``overwrite``; create missing parent folders."""
    p = Path(path)
    if p.exists() and not overwrite:
        raise OutputExistsError(f"output exists: {p} (use --overwrite to replace it)")
    if p.exists() and p.is_dir():
        raise OutputExistsError(f"output is a folder, not a file: {p}")
    p.parent.mkdir(parents=True, exist_ok=True)
    return p


@contextlib.contextmanager
def atomic_path(path: PathLike, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary path beside ``path`` with the same ending; rename it into place on success.

    The temporary file keeps the ending so that writers choosing a format by extension (SimpleITK,
    matplotlib, slicerio) write the right format. On error the temporary file is removed and
    ``path`` is untouched.
    """
    target = check_writable(path, overwrite)
    suffix = _ending(target)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=f".part{suffix}",
                               dir=str(target.parent))
    os.close(fd)
    tmp_path = Path(tmp)
    os.chmod(tmp_path, 0o666 & ~_umask())  # mkstemp makes 0600; outputs follow the umask
    try:
        yield tmp_path
        if not overwrite and target.exists():  # appeared while we were writing
            raise OutputExistsError(f"output exists: {target} (use --overwrite to replace it)")
        os.replace(tmp_path, target)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _ending(path: Path) -> str:
    """The file ending a temporary file must keep (writers choose the format by it)."""
    from .images import image_suffix

    return image_suffix(path) or "".join(path.suffixes[-1:])


def write_json(data, path: PathLike, *, overwrite: bool = False) -> Path:
    with atomic_path(path, overwrite) as tmp:
        tmp.write_text(json.dumps(data, indent=2, sort_keys=False) + "\n", encoding="utf-8")
    return Path(path)


def write_text(text: str, path: PathLike, *, overwrite: bool = False) -> Path:
    with atomic_path(path, overwrite) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)


