"""Query filters of the loopback admin views (GET /admin/orders, /admin/equity): one rule for unknown names and
integer values, so each view answers a bad filter with one message naming it."""

from collections.abc import Iterable, Mapping


def integer_filters(filters: Mapping[str, str], known: Iterable[str], integers: Mapping[str, str]) -> dict[str, int]:
    """The `integers` (name -> unit) among `filters` as ints; ValueError naming an unknown filter or a value that is
    no integer."""
    allowed = sorted({*known, *integers})
    unknown = sorted(set(filters) - set(allowed))
    if unknown:
        raise ValueError(f"unknown filter(s) {unknown}; known: {', '.join(allowed)}")
    numbers: dict[str, int] = {}
    for name, unit in integers.items():
        if name in filters:
            try:
                numbers[name] = int(filters[name])
            except ValueError:
                raise ValueError(f"{name} must be an integer ({unit}), got {filters[name]!r}") from None
    return numbers
