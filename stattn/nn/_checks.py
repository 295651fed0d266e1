"""Argument checks shared by the layers: one wording for one mistake."""
import numbers


def positive_int(owner: str, name: str, value) -> int:
    """``value`` as an int, or ``ValueError("{owner}: {name} must be a positive int, got ...")``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value <= 0:
        raise ValueError(f"{owner}: {name} must be a positive int, got {value!r}")
    return int(value)
