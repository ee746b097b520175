"""Engine errors: each carries the reason code and exit code of the command contract (docs/contracts.md)."""

from __future__ import annotations


class TerrasnapError(Exception):
    reason = "InternalError"
    exit_code = 3

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class UsageError(TerrasnapError):
    reason = "UsageError"
    exit_code = 2


class ValidationFailed(TerrasnapError):
    reason = "ValidationFailed"
    exit_code = 1


class StoreUnreachable(TerrasnapError):
    reason = "StoreUnreachable"


class SourceUnavailable(TerrasnapError):
    reason = "SourceUnavailable"


class GitError(TerrasnapError):
    reason = "GitError"


class DVCError(TerrasnapError):
    reason = "DVCError"


class VerifyFailed(TerrasnapError):
    reason = "VerifyFailed"


class PointerMismatch(TerrasnapError):
    """A source's DVC pointers and its bytes disagree: data never pushed, or a corrupted remote object."""

    reason = "PointerMismatch"
    exit_code = 1
