"""One GC run: `GCRun` is a deliberate state machine whose steps the property tests interleave with snapshots.

`run_gc(store, roots, grace=..., dry_run=...)` is the whole thing; `GCRun` exposes its steps (begin, load
roots, list, plan, one delete batch at a time, finish) so the property tests can interleave a GC with
snapshots. The protocol shared with engine/refs.py is written down in docs/gc.md; what counts as used is
decided in engine/gc/decision.py.
"""

from __future__ import annotations

import contextlib
import json
import posixpath
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from datetime import UTC, datetime, timedelta

from terrasnap.engine import refs
from terrasnap.engine.errors import GCFailedClosed, StoreUnreachable, UsageError
from terrasnap.engine.gc.decision import (
    MANIFEST_FILE,
    METADATA_FILE,
    Decision,
    ManifestFolder,
    dir_entries,
    parse_metadata_objects,
    plan_deletions,
)
from terrasnap.engine.gc.report import GCReport, iso
from terrasnap.engine.store import GC_PREFIX, MANIFEST_PREFIX, ObjectInfo, Store, _mtime

DEFAULT_GRACE = timedelta(hours=24)
DEFAULT_BATCH = 1000


class GCRun:
    """One GC. Steps in order: begin, load_roots, scan_manifests, read_registrations, expand_dirs, list_store,
    plan, then per batch prepare_batch (re-check) and apply_batch (delete), finish. `run()` does them all."""

    def __init__(
        self,
        store: Store,
        roots: list[str],
        *,
        grace: timedelta,
        dry_run: bool,
        roots_complete: bool = False,
        skip_missing_roots: bool = False,
        clock: Callable[[], float] = time.time,
        batch_size: int = DEFAULT_BATCH,
        marker_ttl: float = refs.MARKER_TTL,
        skew: float = refs.CLOCK_SKEW,
    ) -> None:
        self.store = store
        self.roots = list(roots)
        self.grace = grace.total_seconds()
        self.dry_run = dry_run
        self.roots_complete = roots_complete
        # Cluster mode: roots come from statuses a tenant can influence, so a root that names no published
        # snapshot in this store is reported, not fatal (else one forged status stops every GC of the store).
        self.skip_missing_roots = skip_missing_roots
        self.clock = clock
        self.batch_size = batch_size
        self.marker_ttl = marker_ttl
        self.skew = skew
        self.max_runtime = refs.POST_PUBLISH_LEASE / 2
        self.id = uuid.uuid4().hex[:16]
        self.started = clock()
        self.report = GCReport(
            gc=self.id,
            store=store.url,
            roots=self.roots,
            roots_complete=roots_complete,
            dry_run=dry_run,
            grace_seconds=self.grace,
            started=iso(self.started),
        )
        self.used: set[str] = set()
        self.root_folders: set[str] = set()
        self.folders: dict[str, ManifestFolder] = {}
        self.registrations: list[refs.RegistrationDoc] = []
        self.listing: list[ObjectInfo] = []
        self.decisions: list[Decision] = []
        self.queue: list[ObjectInfo] = []
        self.folder_queue: list[ManifestFolder] = []
        self.protected_folders: set[str] = set()
        self.expanded: dict[str, set[str]] = {}  # .dir id → its entries
        self.prepared: tuple[list[ObjectInfo], list[ManifestFolder]] = ([], [])
        self.seq = 0
        self.marker_expires = 0.0
        self.closed = False

    # -- steps ----------------------------------------------------------------------------------
    def begin(self) -> None:
        """Write our marker before anything is read: a snapshot registering later can see us."""
        if not self.dry_run:
            self._write_marker()

    def _write_marker(self) -> None:
        now = self.clock()
        expires = now + self.marker_ttl
        refs.write_marker(self.store, refs.MarkerDoc(gc=self.id, seq=self.seq, started=self.started, expires=expires))
        self.marker_expires = expires

    def load_roots(self) -> None:
        """List every manifest folder, then read each root's metadata.json (a root must be published)."""
        folders: dict[str, ManifestFolder] = {}
        for rel, info in self.store.list_prefix(MANIFEST_PREFIX):
            parent = posixpath.dirname(rel)
            folders.setdefault(parent, ManifestFolder(parent, {})).files[rel] = _mtime(info)
        self.folders = folders
        for uri in self.roots:
            folder = self._root_folder(uri, folders)
            if folder is None:
                continue
            if folder in self.root_folders:
                continue
            meta_rel = posixpath.join(folder, METADATA_FILE)
            try:
                data = self.store.read_bytes(meta_rel)
            except FileNotFoundError as exc:
                raise GCFailedClosed(f"root {uri!r}: {meta_rel} is missing") from exc
            self.used |= parse_metadata_objects(meta_rel, data)
            self.root_folders.add(folder)

    def _root_folder(self, uri: str, folders: Mapping[str, ManifestFolder]) -> str | None:
        """The published manifest folder a root names; None (reported) or GCFailedClosed if it names none."""
        try:
            rel = self.store.rel_from_uri(uri)
        except UsageError:
            rel = None
        folder = None if rel is None else posixpath.dirname(rel) if rel.endswith(MANIFEST_FILE) else rel.rstrip("/")
        if folder is None:
            problem = f"not in store {self.store.url}"
        elif not folder.startswith(MANIFEST_PREFIX + "/"):
            problem = f"not a manifest under {MANIFEST_PREFIX}/"
        elif folder not in folders or not folders[folder].published:
            problem = f"{folder}/{MANIFEST_FILE} does not exist"
        else:
            return folder
        if not self.skip_missing_roots:
            raise GCFailedClosed(f"unknown root {uri!r}: {problem}")
        self.report.missing_roots.append(uri)
        return None

    def scan_manifests(self) -> None:
        """Published or not, root or not: the objects of manifest folders younger than the grace are used."""
        now = self.clock()
        for folder in self.folders.values():
            if folder.rel in self.root_folders:
                continue
            newest = folder.newest()
            young = newest is None or now - newest < self.grace
            meta_rel = posixpath.join(folder.rel, METADATA_FILE)
            if young and meta_rel in folder.files:
                try:
                    data = self.store.read_bytes(meta_rel)
                except FileNotFoundError as exc:  # young folders are never GC'd: someone else deleted it
                    raise GCFailedClosed(f"{meta_rel} vanished while GC read it") from exc
                self.used |= parse_metadata_objects(meta_rel, data)

    def read_registrations(self) -> None:
        self.registrations = refs.read_registrations(self.store)
        self.report.registrations = sum(1 for r in self.registrations if r.live(self.clock(), self.skew))

    def expand_dirs(self) -> None:
        """Defence in depth: a used `.dir` object keeps every entry it lists (as `dvc gc` with shallow=False)."""
        pending = [o for o in self.used if o.endswith(".dir")]
        now = self.clock()
        for reg in self.registrations:
            if reg.live(now, self.skew):  # an expired registration protects nothing (plan_deletions agrees)
                pending.extend(o for o in reg.objects if o.endswith(".dir"))
        seen: set[str] = set()
        for oid in pending:
            if oid in seen:
                continue
            seen.add(oid)
            rel = Store.object_rel(oid)
            try:
                data = self.store.read_bytes(rel)
            except FileNotFoundError:
                if oid in self.used:  # a registration's .dir may simply not be pushed yet
                    self.report.errors.append(f"referenced object {oid} is missing from the store")
                continue
            self.expanded[oid] = dir_entries(rel, data)
            self.used |= self.expanded[oid]

    def list_store(self) -> None:
        self.listing = list(self.store.list_objects())
        self.report.listed = len(self.listing)

    def plan(self) -> None:
        now = self.clock()
        self.decisions = plan_deletions(self.listing, self.used, self.registrations, now, self.grace, self.skew)
        self.queue = [d.obj for d in self.decisions if d.action == "delete"]
        self.report.kept = sum(1 for d in self.decisions if d.action == "keep")
        self.report.kept_inflight = sum(1 for d in self.decisions if d.action == "inflight")
        self.report.skipped_young = sum(1 for d in self.decisions if d.action == "young")
        if self.roots_complete:
            for folder in self.folders.values():
                newest = folder.newest()
                if folder.rel in self.root_folders or newest is None or now - newest < self.grace:
                    continue
                self.folder_queue.append(folder)

    def _recheck(self) -> set[str]:
        """Before a batch: bump our marker, THEN re-read registrations. Returns what they protect."""
        now = self.clock()
        if now - self.started > self.max_runtime:
            # Snapshots published after we read our roots are protected by their post-publish lease only
            # for POST_PUBLISH_LEASE: a run must end well before that.
            raise GCFailedClosed(
                f"GC {self.id}: running for {now - self.started:.0f}s, longer than {self.max_runtime:.0f}s; "
                f"stopping (the next run re-reads its roots)"
            )
        if not self.dry_run:
            if now >= self.marker_expires - self.skew:
                raise GCFailedClosed(
                    f"GC {self.id}: its marker lease lapsed (a stalled run); stopping before deleting more"
                )
            self.seq += 1
            self._write_marker()
        regs = refs.read_registrations(self.store)
        now = self.clock()
        protected: set[str] = set()
        self.protected_folders = set()
        for reg in regs:
            if reg.live(now, self.skew):
                protected |= reg.objects
                if reg.manifest:
                    self.protected_folders.add(reg.manifest)
        # defence in depth: entries of `.dir` objects a new registration names (registrations list entries
        # themselves; a `.dir` not pushed yet has nothing to expand)
        for oid in sorted(o for o in protected if o.endswith(".dir") and o not in self.expanded):
            rel = Store.object_rel(oid)
            try:
                self.expanded[oid] = dir_entries(rel, self.store.read_bytes(rel))
            except FileNotFoundError:
                continue
        for oid in [o for o in protected if o.endswith(".dir")]:
            protected |= self.expanded.get(oid, set())
        return protected

    def _lease_ok(self) -> bool:
        return self.dry_run or self.clock() < self.marker_expires - self.skew

    def delete_batch(self) -> bool:
        """Re-check, then delete the next batch; False when nothing is left. GCFailedClosed stops deleting."""
        if not self.prepare_batch():
            return False
        self.apply_batch()
        return True

    def prepare_batch(self) -> bool:
        """Bump the marker, re-read registrations, take the next batch minus what they protect."""
        if not self.queue and not self.folder_queue:
            return False
        protected = self._recheck()
        if self.queue:
            batch, self.queue = self.queue[: self.batch_size], self.queue[self.batch_size :]
            self.report.kept_inflight += sum(1 for o in batch if o.md5 in protected)
            self.prepared = ([o for o in batch if o.md5 not in protected], [])
        else:
            folders, self.folder_queue = self.folder_queue[: self.batch_size], self.folder_queue[self.batch_size :]
            self.prepared = ([], [f for f in folders if f.rel not in self.protected_folders])
        return True

    def apply_batch(self) -> None:
        """Delete the prepared batch (nothing on a dry run), as long as our marker lease holds."""
        objects, folders = self.prepared
        self.prepared = ([], [])
        if objects:
            if not self._lease_ok():
                raise GCFailedClosed(f"GC {self.id}: marker lease lapsed mid-batch; stopping")
            failed: dict[str, str] = (
                {} if self.dry_run else dict(self.store.delete_batch([Store.object_rel(o.md5) for o in objects]))
            )
            for obj in objects:
                rel = Store.object_rel(obj.md5)
                if rel in failed:
                    self.report.errors.append(f"deleting {rel}: {failed[rel]}")
                    self.report.ok = False
                else:
                    self.report.deleted.append(obj.md5)
                    self.report.freed_bytes += obj.size
        for folder in folders:
            if not self._lease_ok():
                raise GCFailedClosed(f"GC {self.id}: marker lease lapsed mid-batch; stopping")
            # manifest.parquet first: a half-deleted folder is then an unpublished one
            files = sorted(folder.files, key=lambda r: not r.endswith("/" + MANIFEST_FILE))
            failures = [] if self.dry_run else self.store.delete_many(files)
            if failures:
                self.report.ok = False
                self.report.errors.extend(f"deleting {rel}: {err}" for rel, err in failures)
            else:
                self.report.manifests_deleted.append(folder.rel)

    def finish(self) -> GCReport:
        """Write the report (also on a dry run), drop expired registrations and stale markers, unmark."""
        now = self.clock()
        if not self.dry_run:
            self._cleanup(now)
        self.report.finished = iso(self.clock())
        stamp = datetime.fromtimestamp(self.started, UTC).strftime("%Y%m%dT%H%M%S")
        rel = f"{GC_PREFIX}/{stamp}-{self.id}.json"
        self.report.uri = self.store.uri(rel)
        self.store.write_bytes(rel, json.dumps(self.report.to_json(), indent=1, sort_keys=True).encode())
        self.close()
        return self.report

    def _cleanup(self, now: float) -> None:
        expired = self._still_expired([r for r in self.registrations if now > r.expires + 2 * self.skew])
        stale = [
            refs.marker_rel(m.gc)
            for m in refs.read_markers(self.store).values()
            if m.gc != self.id and now > m.expires + 2 * self.skew
        ]
        for rel, err in self.store.delete_many(expired + stale):
            self.report.errors.append(f"cleanup {rel}: {err}")

    def _still_expired(self, regs: list[refs.RegistrationDoc]) -> list[str]:
        """Of the registrations that had expired when this run read them, those still expired now: each is
        re-read right before it is deleted, since its snapshot may have renewed it meanwhile (a stalled
        heartbeat that came back, a `published` lease written after a slow confirm)."""
        out: list[str] = []
        for reg in regs:
            try:
                data = self.store.read_bytes(reg.rel)
            except FileNotFoundError:
                continue  # released by its snapshot
            try:
                fresh = refs.parse_registration(reg.rel, data)
            except refs.ProtocolError as exc:
                self.report.errors.append(f"cleanup {reg.rel}: kept, {exc}")
                continue
            if self.clock() > fresh.expires + 2 * self.skew:
                out.append(reg.rel)
        return out

    def close(self) -> None:
        """Remove our marker (also after a failure: a marker left behind only delays snapshots)."""
        if self.closed:
            return
        self.closed = True
        if not self.dry_run:
            self.store.delete_many([refs.marker_rel(self.id)])

    def steps(self) -> Iterator[str]:
        """The run as named steps (the property tests drive them one by one)."""
        self.begin()
        yield "begin"
        self.load_roots()
        yield "load_roots"
        self.scan_manifests()
        yield "scan_manifests"
        self.read_registrations()
        yield "read_registrations"
        self.expand_dirs()
        yield "expand_dirs"
        self.list_store()
        yield "list"
        self.plan()
        yield "plan"
        while self.prepare_batch():
            yield "recheck"
            self.apply_batch()
            yield "delete"

    def run(self) -> GCReport:
        try:
            for _ in self.steps():
                pass
        except GCFailedClosed as exc:
            self._failed(exc.message)
            raise
        except StoreUnreachable as exc:
            message = f"GC stopped, nothing (more) deleted: {exc.message}"
            self._failed(message)
            raise GCFailedClosed(message) from exc
        except BaseException:
            self.close_quietly()
            raise
        return self.finish()

    def _failed(self, message: str) -> None:
        """Best effort: unmark, and leave a report saying what was deleted before the failure."""
        self.close_quietly()
        self.report.ok = False
        self.report.errors.append(message)
        self.report.finished = iso(self.clock())
        stamp = datetime.fromtimestamp(self.started, UTC).strftime("%Y%m%dT%H%M%S")
        rel = f"{GC_PREFIX}/{stamp}-{self.id}.json"
        try:
            self.store.write_bytes(rel, json.dumps(self.report.to_json(), indent=1, sort_keys=True).encode())
            self.report.uri = self.store.uri(rel)
        except Exception:
            pass

    def close_quietly(self) -> None:
        with contextlib.suppress(Exception):
            self.close()


def run_gc(
    store: Store,
    roots: list[str],
    *,
    grace: timedelta = DEFAULT_GRACE,
    dry_run: bool,
    now: datetime | None = None,
    roots_complete: bool = False,
    skip_missing_roots: bool = False,
    batch_size: int = DEFAULT_BATCH,
) -> GCReport:
    """Delete every object no root, registration or young manifest uses and that is older than `grace`.

    Fails closed (GCFailedClosed, nothing deleted) on a listing error, an unreadable manifest/metadata or
    registration, or a root that is not a published manifest in this store (unless `skip_missing_roots`: then
    such roots are listed in the report's missingRoots). `now` fixes the clock (tests).
    """
    clock: Callable[[], float] = time.time if now is None else (lambda: now.timestamp())
    gc = GCRun(
        store, roots, grace=grace, dry_run=dry_run, roots_complete=roots_complete,
        skip_missing_roots=skip_missing_roots, clock=clock, batch_size=batch_size,
    )
    return gc.run()
