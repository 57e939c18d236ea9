"""Errors that survive a process boundary with their structure intact.

Why: Ray (tasks, actors, Ray Train workers) pickles an exception raised in a worker to re-raise it in the driver.
`BaseException` pickles as `type(self)(*self.args)`, i.e. with the one formatted message, so an error class whose
`__init__` takes structured arguments (path, kind, message) fails to unpickle and the driver sees a `TypeError`
from Ray's deserialiser instead of the error that names the file. `@reconstructible` records the constructor
arguments and pickles by them.

`DiskFullError` (below) is the one error every writer raises for a full file system, naming the file it was writing.
"""
from __future__ import annotations

import contextlib
import errno
import functools
import os
from typing import Any, Iterator, TypeVar

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


# -- full disks ---------------------------------------------------------------------------------------------------
# errno values that say "the file system has no room for this write": retrying cannot help until someone frees space
DISK_FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT})


@reconstructible
class DiskFullError(OSError):
    """A write that failed because its file system is full (ENOSPC) or over quota (EDQUOT); names the file.

    Why its own type: the bare OSError says "[Errno 28] No space left on device" without the file (pyarrow, torch's
    zip writer and `os.writev` do not know it), and torch even turns it into an opaque RuntimeError. It stays an
    OSError (errno ENOSPC) so callers that handle OSError keep working, while `engine.errors.is_transient` refuses
    to retry it: the same write fails again until space is freed, and a resumed run then continues where it stopped.
    """

    def __init__(self, path: str | os.PathLike[str], detail: str = ""):
        self.path = os.fspath(path)
        self.detail = detail
        super().__init__(errno.ENOSPC, f"no space left on device writing {self.path}{': ' + detail if detail else ''}"
                                       "; free space on that file system and run again: finished work is kept and the "
                                       "run resumes after it")

    def __str__(self) -> str:
        return str(self.strerror)


def disk_full_cause(exc: BaseException | None) -> OSError | None:
    """The ENOSPC/EDQUOT OSError behind `exc` (itself, its `__cause__` or `__context__` chain), or None."""
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, OSError) and exc.errno in DISK_FULL_ERRNOS:
            return exc
        exc = exc.__cause__ or exc.__context__
    return None


@contextlib.contextmanager
def disk_full_names(path: str | os.PathLike[str]) -> Iterator[None]:
    """Re-raise a write failure caused by a full disk as `DiskFullError(path)`; any other error passes unchanged."""
    try:
        yield
    except DiskFullError:
        raise
    except BaseException as exc:
        cause = disk_full_cause(exc)
        if cause is None:
            raise
        raise DiskFullError(path, "" if cause.errno == errno.ENOSPC else os.strerror(cause.errno)) from exc
