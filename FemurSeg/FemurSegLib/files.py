"""Files written atomically and never silently overwritten, and JSON read with one error style.

:func:`read_json` is the one JSON reader of the project (model cards, configs, plans, dataset
descriptions, splits, runs, card extras): every failure is one line naming what was read.

Every output of FemurSeg goes through :func:`atomic_path`: written under a temporary name beside
the target, renamed into place only when complete, and an existing file is refused unless
``overwrite``.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import tempfile
from pathlib import Path
from typing import Iterator, Optional, Union

from .errors import OutputExistsError

PathLike = Union[str, os.PathLike]

#: File endings read and written as images (longest first so ".seg.nrrd" wins over ".nrrd").
IMAGE_SUFFIXES = (".seg.nrrd", ".nii.gz", ".nii", ".nrrd", ".nhdr", ".mha", ".mhd")


def image_suffix(path: PathLike) -> Optional[str]:
    """The recognised image ending of ``path`` (lower case), or None."""
    name = Path(path).name.lower()
    for suffix in IMAGE_SUFFIXES:
        if name.endswith(suffix):
            return suffix
    return None


def strip_image_suffix(path: PathLike) -> str:
    """File name of ``path`` without its image ending: ``a/hip01_0000.nii.gz`` -> ``hip01_0000``."""
    name = Path(path).name
    suffix = image_suffix(name)
    return name[: -len(suffix)] if suffix else Path(name).stem


#: nnU-Net's channel suffix of an image file name: ``hip01_0000.nii.gz`` is channel 0 of hip01.
_CHANNEL_SUFFIX = re.compile(r"_\d{4}$")


def case_name(path: PathLike) -> str:
    """The case an image or label file belongs to: its name without the image ending and
    without nnU-Net's channel suffix (``hip01_0000.nii.gz`` and ``hip01.seg.nrrd`` -> ``hip01``);
    a folder (a DICOM series) is named by itself. Outputs are named by it, so that they pair
    with label files (``labelsTr/hip01.nii.gz``) by case name."""
    p = Path(path)
    name = p.name if p.is_dir() else strip_image_suffix(p)
    return _CHANNEL_SUFFIX.sub("", name) or name


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
    return image_suffix(path) or "".join(path.suffixes[-1:])


def write_json(data, path: PathLike, *, overwrite: bool = False) -> Path:
    with atomic_path(path, overwrite) as tmp:
        tmp.write_text(json.dumps(data, indent=2, sort_keys=False) + "\n", encoding="utf-8")
    return Path(path)


def write_text(text: str, path: PathLike, *, overwrite: bool = False) -> Path:
    with atomic_path(path, overwrite) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)




def json_ready(obj):
    """``obj`` for strict JSON: NaN and inf become null, numpy scalars Python numbers, tuples
    lists, keys strings."""
    import math

    if isinstance(obj, dict):
        return {str(k): json_ready(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_ready(v) for v in obj]
    if hasattr(obj, "item") and callable(obj.item) and getattr(obj, "shape", None) == ():
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def read_json(path: PathLike, what: str, error: Optional[type] = None, kind: type = dict):
    """The JSON ``kind`` (object or list) in ``path``, or ``error`` (a :class:`FemurSegError`
    class, by default that) with one line: ``cannot read WHAT PATH: reason``, ``WHAT PATH is not
    valid JSON: ...`` or ``WHAT PATH is not a JSON object`` (``list``: ``... a JSON list``)."""
    from .errors import FemurSegError

    error = error or FemurSegError
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise error(f"cannot read {what} {p}: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise error(f"{what} {p} is not valid JSON: not UTF-8 text") from None
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise error(f"{what} {p} is not valid JSON: {exc}") from None
    if not isinstance(data, kind):
        raise error(f"{what} {p} is not a JSON {'list' if kind is list else 'object'}")
    return data
