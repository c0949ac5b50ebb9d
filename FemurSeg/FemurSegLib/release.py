"""Model weights as release assets, downloaded once into the model cache and verified.

Slicer's extensions index clones a submitted repository with its whole history and refuses one
over 100 MB, so a repository for the index keeps no weights in git: its model folder holds the
card (``model.json``) alone, and the files the card names are assets of a release of the
repository, ``<REPOSITORY_URL>/releases/download/<name>-<version>/<file>``
(:func:`release_url`). :func:`download_model` fetches them into the model cache
(``modelfolder.installed_models_dir()``, listed before the bundled models), each file checked
against the card's SHA-256; a truncated download, a file that fails its checksum or a server
error is refused with one message and leaves nothing in the cache. A complete cached copy is
used as it is (downloaded once).

The repository address is a placeholder until the repository is public: :data:`REPOSITORY` is
the one name that the CMake files, ``FemurSeg.json`` and the module's help text repeat (the
index's checker reads them without CMake, so they must be literal); the README says how to
change it.
"""

from __future__ import annotations

import http.client
import os
import shutil
import tempfile
import urllib.error
import urllib.request
from hashlib import sha256
from pathlib import Path
from typing import Callable, List, Optional, Tuple

from .errors import Cancelled, ModelError
from .modelfolder import CARD_NAME, installed_models_dir, load_model, read_card

#: ``owner/name`` of the public repository (a placeholder: the owner is not known yet; the name
#: starts with "Slicer", as the extensions index asks).
REPOSITORY = "OWNER/SlicerFemurSeg"
REPOSITORY_URL = f"https://github.com/{REPOSITORY}"

#: Which files of each fold the card names (``need`` of :func:`download_model`).
_KEYS = {"onnx": ("onnx",), "weights": ("weights",), "all": ("onnx", "weights")}

_CHUNK = 1 << 20


def release_url(card: dict, repository_url: str = REPOSITORY_URL) -> str:
    """The address of the release that holds the files of the model ``card``."""
    return f"{repository_url.rstrip('/')}/releases/download/{card['name']}-{card['version']}"


def card_files(card: dict, need: str = "onnx") -> List[Tuple[str, str]]:
    """``(file name, SHA-256)`` of every file the card names for ``need`` ("onnx": the ONNX
    graphs inference runs; "weights": the PyTorch weights of the fallback; "all")."""
    if need not in _KEYS:
        raise ValueError(f"need must be one of {', '.join(_KEYS)}, not {need!r}")
    out = []
    for fold in card["folds"]:
        for key in _KEYS[need]:
            name = fold.get(key)
            if not name:
                raise ModelError(f"model {card['name']}: fold {fold.get('fold')} names no "
                                 f"{key} file")
            digest = (fold.get(f"{key}_sha256") or "").lower()
            if not digest:
                raise ModelError(f"model {card['name']}: no SHA-256 for {name} on the card")
            if Path(name).name != name or name in (".", "..", CARD_NAME):
                raise ModelError(f"model {card['name']}: file {name} is outside the model folder")
            out.append((name, digest))
    return out


def needs_download(model_dir: os.PathLike, need: str = "onnx") -> bool:
    """True for a model folder that holds its card but none of the files the card names for
    ``need`` (a repository for the index keeps its models so): :func:`download_model` gets them.
    A folder with some of its files is not downloaded into: loading it names what is missing."""
    d = Path(model_dir)
    if not (d / CARD_NAME).is_file():
        return False
    try:
        files = card_files(read_card(d), need)
    except ModelError:  # a card that is not right: loading the model says what is wrong
        return False
    return not any((d / name).exists() for name, _ in files)


def _fetch(url: str, target: Path, digest: str, timeout: float,
           opener: Callable[..., object],
           is_cancelled: Optional[Callable[[], bool]] = None) -> None:
    """Download ``url`` to ``target``; refuse a short body or another SHA-256."""
    name = target.name
    try:
        response = opener(url, timeout=timeout)
    except urllib.error.HTTPError as exc:
        raise ModelError(f"cannot download {name} from {url}: HTTP {exc.code} {exc.reason}") \
            from None
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", None) or exc
        raise ModelError(f"cannot download {name} from {url}: {reason}") from None
    h = sha256()
    received = 0
    with response:
        length = response.headers.get("Content-Length")
        expected = int(length) if length and length.isdigit() else None
        read = getattr(response, "read1", response.read)  # what has arrived: Cancel is seen
        try:
            with open(target, "wb") as out:
                while True:
                    if is_cancelled is not None and is_cancelled():
                        raise Cancelled("model download cancelled")
                    block = read(_CHUNK)
                    if not block:
                        break
                    out.write(block)
                    h.update(block)
                    received += len(block)
        except http.client.IncompleteRead as exc:
            received += len(exc.partial)
            expected = expected if expected is not None else received + (exc.expected or 0)
        except OSError as exc:  # the connection dropped, or the cache's disk is full
            raise ModelError(f"download of {name} from {url} failed after {received} bytes: "
                             f"{exc}") from None
    if expected is not None and received < expected:
        raise ModelError(f"download of {name} from {url} was truncated ({received} of "
                         f"{expected} bytes); nothing was installed: check the connection and "
                         "retry")
    if h.hexdigest() != digest:
        raise ModelError(f"{name} downloaded from {url} fails its SHA-256 check (the model "
                         "card names another file); nothing was installed")


def download_model(model_dir: os.PathLike, *, base_url: Optional[str] = None,
                   cache_dir: Optional[os.PathLike] = None, need: str = "onnx",
                   timeout: float = 60.0,
                   opener: Callable[..., object] = urllib.request.urlopen,
                   is_cancelled: Optional[Callable[[], bool]] = None) -> Path:
    """The cached, verified copy of the model whose card is in ``model_dir``; downloads it once.

    ``base_url`` is where the files are (default: :func:`release_url` of the card);
    ``cache_dir`` the model cache (default: ``modelfolder.installed_models_dir()``). The files
    go into a staging folder inside the cache and the folder is renamed into place only when
    every file is complete and matches the card's SHA-256; on any failure the staging folder is
    removed and :class:`ModelError` says, in one line, what went wrong. A folder of that name
    already in the cache is used when it verifies (``modelfolder.load_model``) and refused, never
    replaced, when it does not. ``is_cancelled()`` turning true stops the download
    (:class:`Cancelled`), with nothing left either.
    """
    card = read_card(model_dir)
    files = card_files(card, need)
    cache = Path(cache_dir) if cache_dir is not None else installed_models_dir()
    target = cache / str(card["name"])
    load_need = "any" if need == "all" else need
    if target.exists():
        try:
            load_model(target, need=load_need)
        except ModelError as exc:
            raise ModelError(f"the model cache holds {target}, which fails its check ({exc}): "
                             "remove that folder and retry") from None
        return target
    base = (base_url or release_url(card)).rstrip("/")
    created = not cache.exists()
    cache.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.download-", dir=str(cache)))
    try:
        shutil.copyfile(Path(model_dir) / CARD_NAME, staging / CARD_NAME)
        for name, digest in files:
            _fetch(f"{base}/{name}", staging / name, digest, timeout, opener, is_cancelled)
        load_model(staging, need=load_need)  # the whole folder, as inference will read it
        try:
            os.rename(staging, target)  # atomic; fails if the target appeared meanwhile
        except OSError as exc:
            raise ModelError(f"cannot put the downloaded model into {target}: "
                             f"{exc.strerror or exc}") from None
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        if created:
            try:
                cache.rmdir()
            except OSError:
                pass
        raise
    return target
