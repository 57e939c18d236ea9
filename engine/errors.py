"""Which failures are worth retrying: transient ones (a lost Ray worker or node, an I/O error on storage) are;
a configuration error or unusable input is not: it fails the same way every time, so a retry only hides it.
Nor is a full disk or an exceeded quota (ENOSPC, EDQUOT; `storage.errors.DiskFullError`): the write fails again
until someone frees space, so retries would only delay the error: the run stops naming the file, and running it
again after freeing space resumes from the last commit.

The flows' tasks retry through `is_transient` (flows/tasks.py); Ray's own retries cover lost workers inside a step.
"""
from __future__ import annotations

from storage.errors import DISK_FULL_ERRNOS

# OSErrors that name a wrong path or permission: the same on every attempt
_PERMANENT_OS = (FileNotFoundError, NotADirectoryError, IsADirectoryError, PermissionError, FileExistsError)


def _ray_transient() -> tuple[type[BaseException], ...]:
    try:
        import ray.exceptions as rex
    except ImportError:  # pragma: no cover - ray is a dependency
        return ()
    names = ("RayActorError", "ActorDiedError", "ActorUnavailableError", "WorkerCrashedError", "NodeDiedError",
             "ObjectLostError", "OwnerDiedError", "ObjectReconstructionFailedError", "RaySystemError",
             "LocalRayletDiedError", "GetTimeoutError")
    return tuple(getattr(rex, n) for n in names if hasattr(rex, n))


def is_transient(exc: BaseException) -> bool:
    """True for failures a retry can cure; follows `__cause__` and Ray's task-error wrapper to the root error."""
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, _ray_transient()):
            return True
        cause = getattr(exc, "cause", None)  # ray.exceptions.RayTaskError keeps the task's own exception here
        # ... and `as_instanceof_cause` (how ray.get raises it) makes it an instance of that exception's class, but
        # without its errno: judge such a wrapper by the exception it carries
        wrapper = isinstance(cause, BaseException)
        if (isinstance(exc, OSError) and not wrapper and not isinstance(exc, _PERMANENT_OS)
                and exc.errno not in DISK_FULL_ERRNOS):
            return True
        exc = cause if wrapper else exc.__cause__
    return False
