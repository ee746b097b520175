"""Engine errors: each carries a reason of the command contract (api/contract.py); its exit code comes from
there too, so a reason the contract does not know cannot be raised."""

from __future__ import annotations

from terrasnap.api import contract


class TerrasnapError(Exception):
    reason = contract.INTERNAL_ERROR
    exit_code = contract.exit_code(contract.INTERNAL_ERROR)

    def __init_subclass__(cls, **kwargs: object) -> None:
        super().__init_subclass__(**kwargs)
        if cls.reason not in contract.REASONS:
            raise TypeError(f"{cls.__name__}.reason {cls.reason!r} is not a reason of api/contract.py")
        cls.exit_code = contract.REASONS[cls.reason]

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class UsageError(TerrasnapError):
    reason = contract.USAGE_ERROR


class ValidationFailed(TerrasnapError):
    reason = contract.VALIDATION_FAILED


class StoreUnreachable(TerrasnapError):
    reason = contract.STORE_UNREACHABLE


class SourceUnavailable(TerrasnapError):
    reason = contract.SOURCE_UNAVAILABLE


class GitError(TerrasnapError):
    reason = contract.GIT_ERROR


class DVCError(TerrasnapError):
    reason = contract.DVC_ERROR


class VerifyFailed(TerrasnapError):
    reason = contract.VERIFY_FAILED


class GCFailedClosed(TerrasnapError):
    """GC could not establish what is used; it deleted nothing (after this point) and says why."""

    reason = contract.GC_FAILED_CLOSED


class GCIncomplete(TerrasnapError):
    """GC finished, but some deletes failed; the report lists them and the next run retries."""

    reason = contract.GC_INCOMPLETE


class PointerMismatch(TerrasnapError):
    """A source's DVC pointers and its bytes disagree: data never pushed, or a corrupted remote object."""

    reason = contract.POINTER_MISMATCH


class SnapshotDamaged(TerrasnapError):
    """A published snapshot references an object that is missing from the store or whose bytes do not
    match its md5 (`terrasnap verify`)."""

    reason = contract.SNAPSHOT_DAMAGED


class Interrupted(TerrasnapError):
    """The process was asked to stop (SIGTERM); what it registered in the store has been released."""

    reason = contract.INTERRUPTED


class UnsafeInput(TerrasnapError):
    """A name, path, revision or object id from a source or a manifest that could escape where it belongs."""

    reason = contract.UNSAFE_INPUT
