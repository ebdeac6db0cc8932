"""The kinds of request, one module each, and their registry (by name, by path, by value).

The rest of the package handles a request through its ``Kind`` (``_kind.py``) and never names a
kind: adding one (payments, identify) is a module here and a line in ``KINDS``.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from ._kind import Endpoint, Fields, Kind
from .goals import GOALS
from .identify import IDENTIFY
from .payments import PAYMENTS

__all__ = [
    "GOALS",
    "IDENTIFY",
    "KINDS",
    "PAYMENTS",
    "Endpoint",
    "Fields",
    "Kind",
    "by_name",
    "counted",
    "for_path",
    "for_value",
]

#: Every kind, in the order of their ``index`` (the ledger's columns).
KINDS: tuple[Kind[object, object], ...] = (GOALS, PAYMENTS, IDENTIFY)  # type: ignore[assignment]
for _index, _kind in enumerate(KINDS):
    _kind.index = _index

_BY_NAME = {kind.name: kind for kind in KINDS}


def counted(by_kind: dict[str, int]) -> str:
    """Requests counted per kind (by name), in words: ``"12 goals"`` for one kind (``"1
    goal"``), ``"13 requests (12 goals, 1 payment)"`` for several, ``"0 requests"`` for
    none."""
    shown = {name: count for name, count in by_kind.items() if count}
    total = sum(shown.values())
    if not shown:
        return "0 requests"
    parts = [
        f"{count} {by_name(name).noun if count == 1 else by_name(name).plural}"
        for name, count in shown.items()
    ]
    if len(parts) == 1:
        return parts[0]
    return f"{total} {'request' if total == 1 else 'requests'} ({', '.join(parts)})"


def by_name(name: str) -> Kind[object, object]:
    """The kind named ``name`` (``"goals"``); ``KeyError`` for an unknown one."""
    return _BY_NAME[name]


def for_path(path: str) -> Kind[object, object] | None:
    """The kind a journaled record's path belongs to (its query, and any prefix of the base
    URL's path, ignored); ``None`` for a path no kind serves."""
    bare = urlsplit(path).path.rstrip("/")
    for kind in KINDS:
        if bare == kind.path or bare.endswith(kind.path):
            return kind
    return None


def for_value(value: object) -> Kind[object, object] | None:
    """The kind whose value type ``value`` is (a ``Goal``...), else ``None``."""
    for kind in KINDS:
        if isinstance(value, kind.value_type):
            return kind
    return None
