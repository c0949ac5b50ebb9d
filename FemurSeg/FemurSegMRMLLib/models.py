"""The model list of the module panel, from the model cards."""

from __future__ import annotations

from typing import Iterable, List, Tuple


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
