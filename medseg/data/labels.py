"""Which label values a dataset's classes are, and how they map to the network's class indices 0..N−1.

Rules (docs/reliability.md): with ``labels`` in ``dataset.json`` the declared values are the classes (background 0
added when undeclared), in ascending order; values found in a label file but not declared are errors (reported by
``check_dataset``); declared values that never occur are reported. Without declared labels, the values found must be
0..N−1 already: ``{0, 255}`` masks or a stray value refuse with the values found and the fix, instead of silently
training a 256-class network. Declared values that are not 0..N−1 (``{"0": ..., "255": "organ"}``) are remapped to
0..N−1 for training and mapped back in every prediction written.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from medseg.data.discovery import DatasetError

MAX_CLASSES = 256


def class_values(declared: Mapping[int, str], found: Iterable[int], where: str = "dataset.json") -> list[int]:
    """The label value of each class index (``[0, 1, 2]``, or ``[0, 255]`` when declared so).

    Raises:
        DatasetError: undeclared values that are not 0..N−1, or more than ``MAX_CLASSES`` classes.
    """
    found_set = {int(v) for v in found}
    if declared:
        values = sorted({0, *(int(v) for v in declared)})
    else:
        values = sorted({0, *found_set})
        if values != list(range(len(values))):
            example = ", ".join(f'"{v}": "{"background" if v == 0 else f"class_{v}"}"' for v in values[:4])
            raise DatasetError(
                f"label values {_show(values)} found in the label files are not 0..{len(values) - 1}: declare them in "
                f'{where} ("labels": {{{example}{", ..." if len(values) > 4 else ""}}}) to have them mapped to '
                f"0..{len(values) - 1}, or relabel the files"
            )
    if len(values) > MAX_CLASSES:
        raise DatasetError(f"{len(values)} classes ({_show(values)}) is more than {MAX_CLASSES}: check the labels")
    return values


def unused_classes(declared: Mapping[int, str], found: Iterable[int]) -> list[int]:
    """Declared foreground values that occur in no label file (a typo in ``dataset.json``, or a class not present)."""
    found_set = {int(v) for v in found}
    return sorted(int(v) for v in declared if int(v) != 0 and int(v) not in found_set)


def needs_remap(values: list[int]) -> bool:
    return values != list(range(len(values)))


def _show(values: list[int]) -> str:
    shown = ", ".join(map(str, values[:8]))
    return "{" + shown + (f", ... ({len(values)} values)" if len(values) > 8 else "") + "}"
