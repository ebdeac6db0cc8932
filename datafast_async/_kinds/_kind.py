"""``Kind``: what one kind of request is, for the pipeline that carries every kind.

The queue, the sender, the spool and the shutdown handle requests of every kind alike; what
differs by kind is here, behind one small interface: the endpoint (method and path), the
validated fields and the value built from them, the body encoding, what a 2xx success answer
looks like and the result read from it, whether the endpoint is idempotent, and how a journaled
body is read back. Each kind is one module of this package (``goals``, ...) that makes one
instance; ``_kinds`` keeps the registry, by name and by path.
"""

from __future__ import annotations

import abc
from typing import TYPE_CHECKING, Any, ClassVar, Generic, Protocol, TypeVar

if TYPE_CHECKING:
    from .._delivery import Delivery

__all__ = ["Endpoint", "Fields", "Kind"]

#: A kind's validated fields, as its validator returns them (a tuple): what a queued request
#: holds until somebody asks for the value built from them.
Fields = tuple[Any, ...]

E = TypeVar("E")  # the validated value (``Goal``, ...)
R = TypeVar("R")  # the result read from a success answer (``GoalResult``, ...)


class Endpoint(Protocol):
    """What the sender needs of an endpoint to call it and read its answer: every ``Kind``,
    and the direct calls that are not queued (deletes, in ``_kinds.deletes``)."""

    @property
    def method(self) -> str: ...
    @property
    def path(self) -> str: ...
    @property
    def index(self) -> int: ...
    @property
    def idempotent(self) -> bool: ...

    def is_success(self, body: bytes) -> bool: ...
    def read_result(self, body: bytes) -> Any: ...


class Kind(abc.ABC, Generic[E, R]):
    """One kind of request. Its instance is shared by every request of that kind."""

    #: The kind's name in ``Stats.by_kind`` and in logs: ``"goals"``.
    name: ClassVar[str]
    #: One request of it, in a log line: ``"goal"``.
    noun: ClassVar[str]
    #: Many of them: ``"goals"``.
    plural: ClassVar[str]
    #: The type of its validated value (``Goal``, ...).
    value_type: ClassVar[type[Any]]
    method: ClassVar[str] = "POST"
    #: The endpoint's path below the base URL: ``"/api/v1/goals"``.
    path: ClassVar[str]
    #: Whether sending a request twice records it once (payments, by ``transaction_id``):
    #: such a kind has no duplicate window.
    idempotent: ClassVar[bool] = False
    #: Whether its ``Delivery`` has ``.goal`` (the name it had before there were kinds).
    goal_alias: ClassVar[bool] = False
    #: Its place in the registry (set by ``_kinds``): the ledger counts by it.
    index: int = -1

    @abc.abstractmethod
    def pending(self, fields: Fields) -> Delivery[R]:
        """A new, unsettled ``Delivery`` of this kind's own subclass, holding ``fields``."""

    @abc.abstractmethod
    def build(self, fields: Fields) -> E:
        """The value (``Goal``, ...) for fields its validator returned (not checked again)."""

    @abc.abstractmethod
    def fields_of(self, value: E) -> Fields:
        """The fields of a value built earlier (``send(Goal(...))``)."""

    @abc.abstractmethod
    def encode(self, fields: Fields) -> bytes:
        """The request body (deterministic: the bytes journaled are the bytes sent)."""

    @abc.abstractmethod
    def is_success(self, body: bytes) -> bool:
        """Whether a 2xx body is DataFast's success answer for this endpoint."""

    @abc.abstractmethod
    def read_result(self, body: bytes) -> R:
        """The result in a success answer (tolerant: the request was recorded)."""

    @abc.abstractmethod
    def rebuild(self, body: bytes) -> Fields | None:
        """The fields of a journaled body read back from disk, validated again; ``None`` if
        it is not a valid request of this kind (an edited or damaged record)."""

    @abc.abstractmethod
    def disabled(self) -> R:
        """The result of a request of a disabled client (``enabled=False``): nothing sent."""

    @abc.abstractmethod
    def describe(self, fields: Fields) -> str:
        """A short description for log lines: ``"goal 'signup'"`` (never a secret)."""

    def __repr__(self) -> str:
        return f"<Kind {self.name} {self.method} {self.path}>"
