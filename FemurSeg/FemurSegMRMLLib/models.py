"""The model list of the module panel, from the model cards, and the model a run uses."""

from __future__ import annotations

import os
from typing import Iterable, List, Optional, Sequence, Tuple

from FemurSegLib.errors import FemurSegError


def model_choices(models: Iterable[object]) -> List[Tuple[str, str, str]]:
    """``(label, value, tooltip)`` per bundled model, from its card, for the model selector.

    ``models`` are ``FemurSegLib.modelfolder.ModelInfo`` objects (attributes ``name``, ``path``,
    ``card``). The label is the card's name and version, the value (passed to ``--model``) the
    model's folder, the tooltip the core's summary of the card (description, architecture,
    cross-validated DSC, intended use).
    """
    from FemurSegLib.modelfolder import describe

    choices = []
    for info in models:
        card = dict(getattr(info, "card", None) or {})
        card.setdefault("name", getattr(info, "name", "model"))
        label = " ".join(str(x) for x in (card["name"], card.get("version")) if x)
        summary = describe(card).splitlines()[1:]  # the first line repeats the label
        choices.append((label, str(getattr(info, "path", card["name"])),
                        "\n".join(line.strip() for line in summary)))
    return choices


def _is_model_folder(path: Optional[str]) -> bool:
    return bool(path) and os.path.isfile(os.path.join(str(path), "model.json"))


def reconcile_model_choice(model: str, model_folder: Optional[str], listed: Sequence[str]
                           ) -> Tuple[str, Optional[str]]:
    """``(model, model_folder)`` of the panel after checking the saved model against the list.

    ``model`` is the chosen listed model's folder ("" when the user picks a folder of their own,
    ``model_folder``). A saved model that is no longer listed (an extension update moved it, or
    the scene comes from another computer) would show as "Model folder..." while the parameter
    still held the dead path: it becomes a folder choice instead, keeping the path as the
    folder when it still is a model folder.
    """
    if not model or model in listed:
        return model, model_folder
    return "", model if _is_model_folder(model) else model_folder


def model_to_run(model: str, model_folder: Optional[str]) -> str:
    """The ``--model`` value for the panel's choice; :class:`FemurSegError` when it cannot run."""
    if model:
        if not _is_model_folder(model):
            raise FemurSegError(f"the model {model} is no longer installed: choose a model")
        return model
    if not model_folder:
        raise FemurSegError("choose a model folder (no bundled model is selected)")
    if not _is_model_folder(model_folder):
        raise FemurSegError(f"not a FemurSeg model folder (no model.json): {model_folder}")
    return model_folder


class ModelDownload:
    """The files of a model folder that holds only its card, downloaded in a thread
    (``FemurSegLib.release.download_model``: once, into the model cache, each file verified).

    Nothing blocks: the panel polls :meth:`poll` from its timer, as it does pip and the
    segmentation; :meth:`cancel` stops the download (nothing is left in the cache).
    """

    def __init__(self, model_dir: str, *, need: str = "onnx", **download_options) -> None:
        import threading

        from FemurSegLib import release

        self.model_dir = model_dir
        self._cancelled = threading.Event()
        self._result: Optional[str] = None
        self._error: Optional[BaseException] = None

        def run() -> None:
            try:
                self._result = str(release.download_model(
                    model_dir, need=need, is_cancelled=self._cancelled.is_set,
                    **download_options))
            except BaseException as exc:  # handed to poll(), in the GUI's thread
                self._error = exc

        self._thread = threading.Thread(target=run, name="FemurSeg model download", daemon=True)
        self._thread.start()

    def poll(self) -> Optional[str]:
        """The cached model folder once downloaded; None while downloading. Raises the
        download's :class:`FemurSegError` (one line) when it failed."""
        if self._thread.is_alive():
            return None
        if self._error is not None:
            if isinstance(self._error, FemurSegError):
                raise self._error
            raise FemurSegError(f"cannot download the model: {self._error}") from self._error
        return self._result

    def cancel(self, wait_seconds: float = 5.0) -> None:
        """Stop the download; waits up to ``wait_seconds`` for the thread to clean up."""
        self._cancelled.set()
        self._thread.join(timeout=wait_seconds)
