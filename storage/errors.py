"""Errors that survive a process boundary with their structure intact.

Why: Ray (tasks, actors, Ray Train workers) pickles an exception raised in a worker to re-raise it in the driver.
`BaseException` pickles as `type(self)(*self.args)`, i.e. with the one formatted message, so an error class whose
`__init__` takes structured arguments (path, kind, message) fails to unpickle and the driver sees a `TypeError`
from Ray's deserialiser instead of the error that names the file. `@reconstructible` records the constructor
arguments and pickles by them.
"""
from __future__ import annotations

import functools
from typing import Any, TypeVar

E = TypeVar("E", bound=type)


def _rebuild(cls: type, args: tuple[Any, ...], kwargs: dict[str, Any], state: dict[str, Any]) -> BaseException:
    exc = cls(*args, **kwargs)
    exc.__dict__.update(state)
    return exc


def reconstructible(cls: E) -> E:
    """Class decorator for exceptions with a structured `__init__` (see module docstring)."""
    init = cls.__init__

    @functools.wraps(init)
    def __init__(self: BaseException, *args: Any, **kwargs: Any) -> None:
        init(self, *args, **kwargs)
        if type(self).__init__ is __init__:  # a subclass with its own __init__ records its own arguments
            self._init_args = (args, kwargs)

    def __reduce__(self: BaseException) -> tuple[Any, ...]:
        args, kwargs = self.__dict__.get("_init_args", (self.args, {}))
        state = {k: v for k, v in self.__dict__.items() if k != "_init_args"}
        return (_rebuild, (type(self), args, kwargs, state))

    cls.__init__ = __init__  # type: ignore[misc]
    cls.__reduce__ = __reduce__  # type: ignore[assignment]
    return cls
