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
