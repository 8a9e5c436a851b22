"""A class asked for by index or by name, checked against a model's class names (no torch here)."""

from __future__ import annotations

import re

INDEX_RE = re.compile(r"-?[0-9]+")


class ClassError(ValueError):
    """A class the model does not have; str(e) says which ones it has."""


def resolve_class(value: int | str, class_names: list[str]) -> int:
    """A class by index (an int or a string of digits) or by one of the model's class names."""
    n = len(class_names)
    text = str(value).strip()
    # ASCII digits only: str.isdigit() also takes "²" and "٣", and int() refuses "--3".
    if isinstance(value, int) or INDEX_RE.fullmatch(text):
        index = int(text)
        if not 0 <= index < n:
            raise ClassError(f"class {index} out of range: model has {n} classes (0-{n - 1})")
        return index
    if text in class_names:
        return class_names.index(text)
    shown = ", ".join(class_names[:20]) + (", ..." if n > 20 else "")
    raise ClassError(f"unknown class {text!r}: give an index 0-{n - 1} or one of: {shown}")
