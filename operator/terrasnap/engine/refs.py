"""In-flight reference registrations: how a snapshot tells GC "these objects are mine" before pushing.

Interface used by engine/snapshot.py (keep it):

    with refs.inflight(store, objects, owner="ns/name", manifest=folder_rel) as reg:
        push()                       # dvc push (skips objects the store already has)
        reg.confirm(verify, repair=push)
                                     # verify() checks every object, raising VerifyFailed if one is
                                     # missing; repair (optional) re-uploads, then verify runs again.
                                     # confirm waits out any GC batch that may not have seen the
                                     # registration, then verifies again
        if not already_published():  # checked AFTER confirm
            publish()                # manifest folder written, manifest.parquet LAST

`objects`: every object the snapshot references, `.dir` objects AND their entries. `manifest`: the
store-relative manifest folder, so a GC with complete roots never deletes a folder being (re)published.
        reg.published()              # optional: say the manifest is out (kept as a lease, see below)
    # leaving the block normally keeps the registration as a post-publish lease (it expires after
    # POST_PUBLISH_LEASE); leaving it with an exception deletes it.

The protocol (docs/gc.md has the argument why it is safe):

* A registration `terrasnap/inflight/<id>.json` lists the objects (and the manifest folder) before the
  push starts; it carries `expires`, renewed by a heartbeat thread. GC treats every registration that has
  not expired (plus a clock-skew allowance) as a root.
* A GC that deletes writes a marker `terrasnap/gc/active/<gc id>.json` with a sequence number `seq` and
  its own `expires`. Before each delete batch it bumps `seq` (rewriting the marker), then re-reads the
  registrations, then deletes only what no registration names.
* Right after writing its registration, a snapshot reads the markers: {gc id: seq}. A batch whose
  registration read came before our registration was written carries one of those (gc id, seq) pairs;
  every later batch of that GC, and every GC started later, sees our registration. So `confirm` waits
  until each marker it saw is gone, expired, or has a higher `seq`, and then verifies again: anything a
  GC deleted under us is then missing, and verify() re-uploads it.
"""

from __future__ import annotations

import json
import re
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from terrasnap.engine.errors import StoreUnreachable, VerifyFailed
from terrasnap.engine.store import GC_PREFIX, INFLIGHT_PREFIX, Store

MARKER_PREFIX = f"{GC_PREFIX}/active"
DEFAULT_TTL = 2 * 3600.0  # lease of an in-flight registration, renewed by the heartbeat
POST_PUBLISH_LEASE = 48 * 3600.0  # how long a published snapshot stays a root through its registration
MARKER_TTL = 600.0  # lease of a GC marker, renewed before each delete batch
CLOCK_SKEW = 300.0  # allowance for clock differences between snapshot pods and GC pods
OBJECT_RE = re.compile(r"^[0-9a-f]{32}(\.dir)?$")

Clock = Callable[[], float]


class ProtocolError(StoreUnreachable):
    """A registration or marker in the store cannot be read or makes no sense: GC must fail closed."""


# -- registrations -------------------------------------------------------------------------------


@dataclass(frozen=True)
class RegistrationDoc:
    """A registration as GC reads it."""

    id: str
    rel: str
    owner: str
    objects: frozenset[str]
    manifest: str | None
    created: float
    expires: float
    state: str

    def live(self, now: float, skew: float = CLOCK_SKEW) -> bool:
        # GC errs on the side of keeping: a registration counts until well after its expiry.
        return now < self.expires + skew


def parse_registration(rel: str, data: bytes) -> RegistrationDoc:
    try:
        doc = json.loads(data)
        objects = doc["objects"]
        if not isinstance(objects, list) or not all(isinstance(o, str) and OBJECT_RE.match(o) for o in objects):
            raise ValueError("'objects' must be a list of <md5> / <md5>.dir")
        manifest = doc.get("manifest")
        if manifest is not None and not isinstance(manifest, str):
            raise ValueError("'manifest' must be a string")
        return RegistrationDoc(
            id=str(doc.get("id") or rel.rsplit("/", 1)[-1].removesuffix(".json")),
            rel=rel,
            owner=str(doc.get("owner", "")),
            objects=frozenset(objects),
            manifest=manifest.strip("/") if manifest else None,
            created=float(doc["created"]),
            expires=float(doc["expires"]),
            state=str(doc.get("state", "inflight")),
        )
    except (ValueError, KeyError, TypeError) as exc:
        raise ProtocolError(f"registration {rel} is unreadable: {type(exc).__name__}: {exc}") from exc


def read_registrations(store: Store) -> list[RegistrationDoc]:
    """Every registration in the store (live or not). Raises ProtocolError/StoreUnreachable: fail closed."""
    docs: list[RegistrationDoc] = []
    for rel, _info in store.list_prefix(INFLIGHT_PREFIX):
        if not rel.endswith(".json"):
            continue
        try:
            data = store.read_bytes(rel)
        except FileNotFoundError:
            continue  # released between listing and reading: no longer a root
        docs.append(parse_registration(rel, data))
    return docs


# -- GC markers ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class MarkerDoc:
    gc: str
    seq: int
    started: float
    expires: float

    def gone(self, now: float, skew: float = CLOCK_SKEW) -> bool:
        """True when the GC holding it can no longer delete (its own check stops it before `expires`)."""
        return now > self.expires + skew


def marker_rel(gc_id: str) -> str:
    return f"{MARKER_PREFIX}/{gc_id}.json"


def write_marker(store: Store, doc: MarkerDoc) -> None:
    store.write_bytes(
        marker_rel(doc.gc),
        json.dumps({"gc": doc.gc, "seq": doc.seq, "started": doc.started, "expires": doc.expires}).encode(),
    )


def read_markers(store: Store) -> dict[str, MarkerDoc]:
    """Every GC marker; an unreadable one counts as an active GC that never finishes a batch."""
    out: dict[str, MarkerDoc] = {}
    for rel, _info in store.list_prefix(MARKER_PREFIX):
        if not rel.endswith(".json"):
            continue
        gc_id = rel.rsplit("/", 1)[-1].removesuffix(".json")
        try:
            doc = json.loads(store.read_bytes(rel))
            out[gc_id] = MarkerDoc(
                gc=gc_id, seq=int(doc["seq"]), started=float(doc["started"]), expires=float(doc["expires"])
            )
        except FileNotFoundError:
            continue
        except (ValueError, KeyError, TypeError):
            out[gc_id] = MarkerDoc(gc=gc_id, seq=-1, started=0.0, expires=float("inf"))
    return out


# -- the snapshot side -----------------------------------------------------------------------------


@dataclass
class Registration:
    store: Store
    owner: str
    objects: list[str]
    manifest: str | None = None
    ttl: float = DEFAULT_TTL
    clock: Clock = time.time
    skew: float = CLOCK_SKEW
    id: str = field(default_factory=lambda: uuid.uuid4().hex)
    created: float = 0.0
    expires: float = 0.0  # of the last registration write that succeeded
    state: str = "inflight"
    gc_seen: dict[str, int] = field(default_factory=dict)
    _pending: dict[str, int] = field(default_factory=dict, repr=False)
    lease_lost: bool = False
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @property
    def rel(self) -> str:
        return f"{INFLIGHT_PREFIX}/{self.id}.json"

    def _doc(self, expires: float) -> dict[str, Any]:
        return {
            "id": self.id,
            "owner": self.owner,
            "created": self.created,
            "expires": expires,
            "state": self.state,
            "objects": self.objects,
            "manifest": self.manifest,
        }

    def _write(self, ttl: float) -> None:
        now = self.clock()
        # A lease that may already have lapsed (in GC's eyes) cannot be revived: GC may have acted on it.
        if self.expires and now >= self.expires - self.skew:
            self.lease_lost = True
        expires = now + ttl
        self.store.write_bytes(self.rel, json.dumps(self._doc(expires), sort_keys=True).encode())
        self.expires = expires

    def write(self) -> None:
        """Register, then note which GC batches might not have seen us (read AFTER the write)."""
        with self._lock:
            self.created = self.clock()
            self._write(self.ttl)
        self.gc_seen = {m.gc: m.seq for m in read_markers(self.store).values() if not m.gone(self.clock(), self.skew)}
        self._pending = dict(self.gc_seen)

    def heartbeat(self) -> None:
        with self._lock:
            if self.state == "inflight":
                self._write(self.ttl)

    def pending_gcs(self) -> dict[str, int]:
        """The GC batches we saw at registration time that may still delete objects without seeing us."""
        if not self._pending:
            return {}
        now = self.clock()
        current = read_markers(self.store)
        pending = {}
        for gc_id, seq in self._pending.items():
            m = current.get(gc_id)
            if m is not None and m.seq <= seq and not m.gone(now, self.skew):
                pending[gc_id] = seq
        self._pending = pending
        return pending

    def check_lease(self) -> None:
        if self.lease_lost or self.clock() >= self.expires - self.skew:
            self.lease_lost = True
            raise VerifyFailed(
                f"in-flight registration {self.rel} lapsed before the snapshot was confirmed "
                f"(a GC may have deleted its objects); retry the snapshot"
            )

    def confirm_step(self, verify: Callable[[], None]) -> bool:
        """One non-blocking round: True once confirmed. Verifies when no overlapping GC batch is pending."""
        self.check_lease()
        if self.pending_gcs():
            return False
        verify()
        self.check_lease()
        return True

    def confirm(
        self,
        verify: Callable[[], None],
        *,
        repair: Callable[[], None] | None = None,
        poll: float = 2.0,
        timeout: float | None = 2 * (MARKER_TTL + CLOCK_SKEW),
    ) -> None:
        """verify() now, and once more after every GC batch that may not have seen us is over.

        verify() raises VerifyFailed when an object is missing or wrong; with `repair` (e.g. push again),
        a failed verify is repaired once and verified again, instead of failing the snapshot.
        """
        self._verify(verify, repair)
        if not self.gc_seen:
            # No GC batch was running when we registered: every batch that deletes from now on reads the
            # registrations after our write, so the verify above (after the push) is final.
            self.check_lease()
            return
        deadline = None if timeout is None else time.monotonic() + timeout
        while self.pending_gcs():
            self.check_lease()
            if deadline is not None and time.monotonic() > deadline:
                raise VerifyFailed(f"a GC run overlapping {self.rel} did not finish its batch in time; retry")
            time.sleep(poll)
        self._verify(verify, repair)
        self.check_lease()

    @staticmethod
    def _verify(verify: Callable[[], None], repair: Callable[[], None] | None) -> None:
        try:
            verify()
        except VerifyFailed:
            if repair is None:
                raise
            repair()
            verify()

    def published(self, lease: float = POST_PUBLISH_LEASE) -> None:
        """The manifest is out: keep the registration as a lease until the cluster's roots know it."""
        with self._lock:
            self.state = "published"
            self._write(lease)

    def release(self) -> None:
        with self._lock:
            self.state = "released"
            self.store.delete_many([self.rel])


class _Heartbeat:
    def __init__(self, reg: Registration, interval: float) -> None:
        self.reg = reg
        self.interval = interval
        self.stop_event = threading.Event()
        self.thread = threading.Thread(target=self._run, name=f"refs-heartbeat-{reg.id[:8]}", daemon=True)

    def _run(self) -> None:
        while not self.stop_event.wait(self.interval):
            try:
                self.reg.heartbeat()
            except Exception:  # a missed beat shows up as a lapsed lease in confirm()
                continue

    def __enter__(self) -> _Heartbeat:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop_event.set()
        self.thread.join()


@contextmanager
def inflight(
    store: Store,
    objects: list[str],
    owner: str,
    *,
    manifest: str | None = None,
    ttl: float = DEFAULT_TTL,
    heartbeat: float | None = None,
    clock: Clock = time.time,
) -> Iterator[Registration]:
    """Register `objects` (and the manifest folder, store-relative) for the duration of a snapshot."""
    bad = [o for o in objects if not OBJECT_RE.match(o)]
    if bad:
        raise ValueError(f"not DVC object ids: {bad[:3]}")
    if ttl <= 2 * CLOCK_SKEW:
        raise ValueError(f"registration ttl {ttl}s must exceed twice the clock-skew allowance ({CLOCK_SKEW}s)")
    reg = Registration(
        store=store, owner=owner, objects=sorted(set(objects)), manifest=manifest, ttl=ttl, clock=clock
    )
    reg.write()
    try:
        with _Heartbeat(reg, heartbeat if heartbeat is not None else ttl / 4):
            yield reg
    except BaseException:
        reg.release()
        raise
    if reg.state == "inflight":
        reg.published()
