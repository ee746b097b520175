"""Secrets never reach an output: URL userinfo is stripped, and known secret values are masked.

Used by cli._run's error path (stderr and the result document) and wherever a source URL is recorded
(metadata.json, the progress log, error messages). Known secrets: TERRASNAP_GIT_TOKEN's value, and the
userinfo of any URL handed to `remember_url` (a git URL with `user:password@`).
"""

from __future__ import annotations

import os
import re
from urllib.parse import unquote

MASK = "***"
# scheme://userinfo@ — userinfo stops at the first '/', whitespace or quote; '@' may appear in it only
# percent-encoded, so the last '@' before the host ends it.
_USERINFO = re.compile(r"(?P<scheme>\b[A-Za-z][A-Za-z0-9+.-]*://)(?P<userinfo>[^/\s'\"@]*(?:@[^/\s'\"@]*)*)@")
_SECRET_ENV = ("TERRASNAP_GIT_TOKEN",)
_known: set[str] = set()


def remember_url(url: str) -> None:
    """Remember the password of a URL's userinfo (`user:PASSWORD@`, or a bare `TOKEN@`) as a secret, also in
    its decoded spelling. A user name is not masked (it would hide that word everywhere); URLs lose their
    whole userinfo anyway."""
    m = _USERINFO.search(url)
    if not m:
        return
    user, sep, password = m.group("userinfo").partition(":")
    secret = password if sep else user
    if len(secret) >= 3:  # never mask single letters all over a message
        _known.update({secret, unquote(secret)})


def strip_userinfo(url: str) -> str:
    """The URL without `user:password@` (https://user:pw@host/x → https://host/x)."""
    return _USERINFO.sub(lambda m: m.group("scheme"), url)


def _secrets() -> list[str]:
    values = {os.environ.get(k, "") for k in _SECRET_ENV} | _known
    return sorted((v for v in values if len(v) >= 3), key=len, reverse=True)  # longest first


def redact(text: str) -> str:
    """`text` with URL userinfo replaced by *** and every known secret value masked."""
    text = _USERINFO.sub(lambda m: f"{m.group('scheme')}{MASK}@", text)
    for value in _secrets():
        text = text.replace(value, MASK)
    return text
