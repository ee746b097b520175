"""Findings: one rule's verdict about one file (or one feature in it), and exact counts per rule.

A file with a million bad features must not produce a million findings (the report would dwarf the
data), so `Collector` keeps the first few per rule as examples and folds the rest into one summary
finding; `counts` stay exact either way, and the finding counts always add up to them.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, SupportsIndex

from terrasnap.api.policy import Severity

if TYPE_CHECKING:
    from terrasnap.engine.validate.policy import Policy

MAX_EXAMPLES = 10


@dataclass(frozen=True)
class Finding:
    rule: str
    severity: Severity
    path: str
    message: str  # says what and where: "<path>: feature 17: <what> (<rule>)"
    count: int = 1
    feature: int | None = None  # 0-based index in its layer, when the finding is about one feature
    layer: str | None = None

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {
            "rule": self.rule,
            "severity": self.severity,
            "path": self.path,
            "message": self.message,
            "count": self.count,
        }
        if self.feature is not None:
            d["feature"] = self.feature
        if self.layer is not None:
            d["layer"] = self.layer
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Finding:
        return cls(
            rule=d["rule"], severity=d["severity"], path=d["path"], message=d["message"],
            count=d.get("count", 1), feature=d.get("feature"), layer=d.get("layer"),
        )


def sort_key(f: Finding) -> tuple[Any, ...]:
    # Errors first, then by where they are, so reports read top-down and are deterministic.
    return (0 if f.severity == "error" else 1, f.path, f.layer or "", f.rule,
            -1 if f.feature is None else f.feature, f.message)


def count_map(findings: Iterable[Finding]) -> dict[str, dict[str, int]]:
    """{rule: {severity: count}} with sorted keys."""
    out: dict[str, dict[str, int]] = {}
    for f in findings:
        out.setdefault(f.rule, {}).setdefault(f.severity, 0)
        out[f.rule][f.severity] += f.count
    return {r: dict(sorted(s.items())) for r, s in sorted(out.items())}


def severity_of(policy: Policy | None, rule: str, hint: bool = False) -> Severity | None:
    """A finding's severity under `policy` (None: the default policy); None when the rule is off."""
    return (policy or _default_policy()).severity(rule, hint)


@functools.cache
def _default_policy() -> Policy:
    from terrasnap.engine.validate.policy import Policy  # lazily: the default policy is built on first use

    return Policy()


@dataclass
class Collector:
    """Accumulates findings for one file/layer, capping per-feature examples per (rule, severity).
    Every finding's severity comes from the policy's level for its rule (off: not emitted)."""

    path: str
    layer: str | None = None
    policy: Policy | None = None  # None: the default policy
    max_examples: int = MAX_EXAMPLES
    findings: list[Finding] = field(default_factory=list)
    _examples: dict[tuple[str, Severity], int] = field(default_factory=dict)
    _overflow: dict[tuple[str, Severity], list[int]] = field(default_factory=dict)  # [count, first feature]

    # The current batch's feature ids (an "id" attribute, e.g. GeoJSON string ids), so a message can
    # name the feature the way its author knows it: (index of ids[0], column). Looked up lazily.
    _ids: tuple[int, Any] | None = None

    def set_ids(self, offset: int, ids: Any | None) -> None:
        self._ids = None if ids is None else (offset, ids)

    def _id_of(self, feature: int) -> str | None:
        if self._ids is None:
            return None
        offset, ids = self._ids
        if not 0 <= feature - offset < len(ids):
            return None
        value = ids[feature - offset]
        value = value.as_py() if hasattr(value, "as_py") else value
        return None if value is None else str(value)[:80]

    def where(self, feature: int | None = None) -> str:
        loc = self.path if self.layer is None else f"{self.path} (layer {self.layer})"
        if feature is None:
            return loc
        fid = self._id_of(feature)
        return f"{loc}: feature {feature}" + (f" (id={fid})" if fid is not None else "")

    def severity(self, rule: str, hint: bool = False) -> Severity | None:
        return severity_of(self.policy, rule, hint)

    def add(self, rule: str, what: str, feature: SupportsIndex | None = None, count: int = 1, *,
            hint: bool = False) -> Severity | None:
        """Record a finding of `rule`; returns its severity under the policy (None: the rule is off).
        `what` is the rule-specific text; location and rule name are added here. A hint is a note
        beside the rule's verdict (e.g. "assuming EPSG:32633"): at most a warning."""
        severity = self.severity(rule, hint)
        if count <= 0 or severity is None:
            return severity
        feature = None if feature is None else feature.__index__()  # numpy ints -> int
        key: tuple[str, Severity] = (rule, severity)
        if feature is not None and count == 1 and self._examples.get(key, 0) >= self.max_examples:
            over = self._overflow.setdefault(key, [0, feature])
            over[0] += 1
            return severity
        self._examples[key] = self._examples.get(key, 0) + 1
        self.findings.append(Finding(rule, severity, self.path, f"{self.where(feature)}: {what} ({rule})",
                                     count, feature, self.layer))
        return severity

    def finish(self) -> list[Finding]:
        for (rule, severity), (n, first) in sorted(self._overflow.items()):
            self.findings.append(Finding(
                rule, severity, self.path,
                f"{self.where()}: {n} more feature(s) fail {rule} (first of them: feature {first}); "
                f"only the first {self.max_examples} are listed ({rule})",
                n, None, self.layer))
        self._overflow.clear()
        return self.findings
