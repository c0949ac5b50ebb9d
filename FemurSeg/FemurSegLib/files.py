"""Files written atomically and never silently overwritten, and JSON read with one error style.

:func:`read_json` is the one JSON reader of the project (model cards, configs, plans, dataset
descriptions, splits, runs, card extras): every failure is one line naming what was read.

The one atomic-write module: every output of FemurSeg goes through it.

- :func:`atomic_path`: one file, written under a temporary name beside the target and renamed into
  place only when complete; an existing file is refused unless ``overwrite``.
- :class:`Staging`: several files (the outputs of one input, a MetaImage header and its data
  file) renamed into place together, all or nothing.
- :func:`replace_folder`: a complete folder (a model folder) renamed into place; an existing one
  is moved aside first and put back if the rename fails, so a crash never loses both.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import shutil
import tempfile
from pathlib import Path
from typing import Callable, Iterator, List, Optional, Sequence, Tuple, Union

from .errors import OutputError, OutputExistsError

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


def check_output(path: PathLike, overwrite: bool) -> Path:
    """The one writable-output check, without side effects: refuse a folder, an existing file
    (unless ``overwrite``), a parent that is a file, and a nearest existing folder in which no
    file can be created (tried, not guessed from permission bits). ``femurseg segment`` runs it
    on every planned output before the model loads; every writer through :func:`check_writable`.
    """
    p = Path(path)
    if p.is_dir():
        raise OutputError(f"cannot write {p}: it is a folder")
    if p.exists() and not overwrite:
        raise OutputExistsError(f"output exists: {p} (use --overwrite to replace it)")
    anchor = _nearest_existing(p.parent)
    if not anchor.is_dir():
        raise OutputError(f"cannot write {p}: {anchor} is a file, not a folder")
    reason = _can_create_in(anchor)
    if reason:
        raise OutputError(f"cannot write {p}: {reason} ({anchor})")
    return p


def _nearest_existing(path: Path) -> Path:
    p = path.absolute()
    while not p.exists() and p != p.parent:
        p = p.parent
    return p


def _can_create_in(folder: Path) -> Optional[str]:
    """None if a file can be created in ``folder``, else why not (tried, then removed)."""
    try:
        fd, probe = tempfile.mkstemp(prefix=".femurseg-probe-", dir=str(folder))
    except OSError as exc:
        return exc.strerror or str(exc)
    os.close(fd)
    os.unlink(probe)
    return None


def check_writable(path: PathLike, overwrite: bool) -> Path:
    """:func:`check_output`, then create the missing parent folders."""
    p = check_output(path, overwrite)
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


def replace_folder(staged: PathLike, target: PathLike, *, overwrite: bool = False) -> Path:
    """Rename the complete folder ``staged`` to ``target`` (both in the same file system).

    An existing ``target`` is refused unless ``overwrite``; with it, the old folder is first
    renamed aside (``.NAME.TOKEN.old`` beside it), then ``staged`` is renamed in, and only then is
    the old folder removed. If renaming ``staged`` in fails, the old folder is put back: at every
    moment one complete folder is at ``target`` or beside it, never neither.
    """
    staged, target = Path(staged), Path(target)
    if target.exists() and not overwrite:
        raise OutputExistsError(f"output exists: {target} (use --overwrite to replace it)")
    target.parent.mkdir(parents=True, exist_ok=True)
    backup = None
    if target.exists():
        backup = target.parent / f".{target.name}.{secrets.token_hex(4)}.old"
        os.replace(target, backup)
    try:
        os.replace(staged, target)
    except BaseException:
        if backup is not None:
            os.replace(backup, target)
        raise
    if backup is not None:
        if backup.is_dir() and not backup.is_symlink():
            shutil.rmtree(backup, ignore_errors=True)
        else:
            backup.unlink(missing_ok=True)
    return target


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _ending(path: Path) -> str:
    """The file ending a temporary file must keep (writers choose the format by it)."""
    return image_suffix(path) or "".join(path.suffixes[-1:])


def write_json(data, path: PathLike, *, overwrite: bool = False) -> Path:
    """``data`` as strict JSON (NaN and inf written as null, see :func:`json_ready`: other
    readers than Python's, e.g. a browser's or jq, refuse ``NaN``), atomically."""
    text = json.dumps(json_ready(data), indent=2, sort_keys=False, allow_nan=False)
    with atomic_path(path, overwrite) as tmp:
        tmp.write_text(text + "\n", encoding="utf-8")
    return Path(path)


def write_text(text: str, path: PathLike, *, overwrite: bool = False) -> Path:
    with atomic_path(path, overwrite) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)


class Staging:
    """Outputs of one input, written under temporary names and renamed into place together.

    ::

        with Staging(overwrite) as staging:
            staging.write(path, lambda tmp: writer(tmp))           # one file
            staging.write_folder(folder, lambda tmp_dir: ...)      # files into a folder
            staging.commit()

    Leaving the block without :meth:`commit` (an exception) removes every temporary file and
    every folder the staging made; existing files are never touched before the commit, and a
    failed commit puts back what it had replaced.
    """

    def __init__(self, overwrite: bool = False):
        self.overwrite = overwrite
        self._pending: List[Tuple[Path, Path]] = []   # (temporary, target)
        self._temp_dirs: List[Path] = []
        self._made_dirs: List[Path] = []
        self._token = secrets.token_hex(4)

    def __enter__(self) -> "Staging":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self.discard()

    def _make_dirs(self, folder: Path) -> None:
        missing = []
        p = folder
        while not p.exists():
            missing.append(p)
            p = p.parent
        for d in reversed(missing):
            d.mkdir()
            self._made_dirs.append(d)

    def _temporary(self, target: Path) -> Path:
        return target.parent / f".{target.name}.{self._token}.part{_ending(target)}"

    def write(self, target: Path, write: Callable[[Path], None]) -> None:
        """Write one file: ``write(tmp)`` writes it at a temporary path beside ``target``."""
        target = Path(target)
        with _as_output_error(target):
            self._make_dirs(target.parent)
            tmp = self._temporary(target)
            self._pending.append((tmp, target))
            write(tmp)
            if not tmp.is_file():
                raise OutputError(f"cannot write {target}: the writer made no file")

    def write_folder(self, folder: Path, write: Callable[[Path], None], *,
                     last: Sequence[str] = ()) -> List[Path]:
        """Write files into ``folder``: ``write(tmp_dir)`` writes them into a temporary folder
        inside it; each file is then staged under its own name (the names in ``last`` after
        the others: a header after the data file it names). Returns the targets."""
        folder = Path(folder)
        with _as_output_error(folder):
            self._make_dirs(folder)
            tmp_dir = folder / f".femurseg-{self._token}.part"
            tmp_dir.mkdir()
            self._temp_dirs.append(tmp_dir)
            write(tmp_dir)
            targets = []
            for made in sorted(tmp_dir.iterdir(), key=lambda p: (p.name in last, p.name)):
                target = folder / made.name
                self._pending.append((made, target))
                targets.append(target)
            return targets

    def targets(self) -> List[Path]:
        """The files staged so far (their final paths)."""
        return [target for _, target in self._pending]

    def commit(self) -> List[Path]:
        """Rename every staged file into place; returns the targets."""
        replaced: List[Tuple[Path, Path]] = []  # (backup, target)
        placed: List[Path] = []
        try:
            for tmp, target in self._pending:
                with _as_output_error(target):
                    if target.exists():
                        if not self.overwrite:
                            raise OutputExistsError(f"output exists: {target} (use --overwrite "
                                                    "to replace it)")
                        backup = target.parent / f".{target.name}.{self._token}.old"
                        os.replace(target, backup)
                        replaced.append((backup, target))
                    os.replace(tmp, target)
                    placed.append(target)
        except BaseException:
            for target in placed:
                target.unlink(missing_ok=True)
            for backup, target in replaced:
                os.replace(backup, target)
            raise
        for backup, _ in replaced:
            backup.unlink(missing_ok=True)
        done = [target for _, target in self._pending]
        self._pending = []
        self.discard()  # folders made for nothing (no STL surface to write) go too
        return done

    def discard(self) -> None:
        """Remove what is still staged and the folders made for it (only if empty)."""
        for tmp, _ in self._pending:
            try:
                tmp.unlink(missing_ok=True)
            except OSError:
                pass
        self._pending = []
        for d in self._temp_dirs:
            shutil.rmtree(d, ignore_errors=True)
        self._temp_dirs = []
        for d in reversed(self._made_dirs):
            try:
                d.rmdir()
            except OSError:
                pass
        self._made_dirs = []


class _as_output_error:
    """Turn an ``OSError`` into ``OutputError("cannot write PATH: reason")``."""

    def __init__(self, path: Path):
        self.path = path

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        if exc_type is not None and issubclass(exc_type, OSError):
            reason = exc.strerror or str(exc) or exc_type.__name__
            raise OutputError(f"cannot write {self.path}: {reason}") from None
        return False


# ----------------------------------------------------------------------------------------------
# JSON


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
