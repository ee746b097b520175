"""The snapshot side of the GC protocol: registrations, leases, and confirm() waiting out overlapping GC batches."""

from __future__ import annotations

import json
import threading
import time
from datetime import timedelta
from pathlib import Path

import pytest

from terrasnap.engine import refs
from terrasnap.engine.errors import VerifyFailed
from terrasnap.engine.gc.run import GCRun
from terrasnap.engine.store import Store
from tests.engine.gcsim import objects_in, put

A = "a" * 32
B = "b" * 32 + ".dir"


@pytest.fixture
def store(tmp_path: Path) -> Store:
    return Store.from_url(f"file://{tmp_path}/store")


class Clock:
    def __init__(self) -> None:
        self.t = 1_000_000.0

    def __call__(self) -> float:
        return self.t


def _docs(store: Store) -> list[dict[str, object]]:
    return [json.loads(store.read_bytes(rel)) for rel, _ in store.list_prefix(refs.INFLIGHT_PREFIX)]


def test_registration_lifecycle(store: Store) -> None:
    clock = Clock()
    with refs.inflight(store, [B, A, A], owner="ns/x", manifest="terrasnap/manifests/ns/x/h", clock=clock,
                       ttl=1000, heartbeat=3600) as reg:
        (doc,) = _docs(store)
        assert doc["objects"] == [A, B] and doc["state"] == "inflight" and doc["expires"] == clock.t + 1000
        assert doc["manifest"] == "terrasnap/manifests/ns/x/h" and doc["owner"] == "ns/x"
        clock.t += 50
        reg.heartbeat()
        assert _docs(store)[0]["expires"] == clock.t + 1000
        calls: list[int] = []
        reg.confirm(lambda: calls.append(1))
        assert calls == [1], "no GC was running: one verify after the push is final"
    (doc,) = _docs(store)
    assert doc["state"] == "published" and doc["expires"] == clock.t + refs.POST_PUBLISH_LEASE


def test_failed_snapshot_drops_its_registration(store: Store) -> None:
    with pytest.raises(RuntimeError), refs.inflight(store, [A], owner="ns/x", heartbeat=3600):
        raise RuntimeError("push failed")
    assert _docs(store) == []


def test_lapsed_lease_fails_confirm(store: Store) -> None:
    clock = Clock()
    with pytest.raises(VerifyFailed, match="lapsed"), \
            refs.inflight(store, [A], owner="ns/x", clock=clock, ttl=1000, heartbeat=3600) as reg:
        clock.t += 1000 - refs.CLOCK_SKEW + 1
        reg.confirm(lambda: None)
    clock.t = 0


def test_lapsed_lease_is_not_revived_by_a_late_heartbeat(store: Store) -> None:
    clock = Clock()
    reg = refs.Registration(store=store, owner="x", objects=[A], ttl=1000, clock=clock)
    reg.write()
    clock.t += 2000
    reg.heartbeat()
    with pytest.raises(VerifyFailed):
        reg.check_lease()


def test_not_ids_and_short_leases_are_refused(store: Store) -> None:
    with pytest.raises(ValueError), refs.inflight(store, ["../x"], owner="x"):
        pass
    with pytest.raises(ValueError, match="ttl"), refs.inflight(store, [A], owner="x", ttl=refs.CLOCK_SKEW):
        pass


def test_confirm_waits_for_an_overlapping_gc_batch_then_verifies_again(store: Store) -> None:
    """A GC batch in progress when we register may delete our objects: wait for its next batch, verify again."""
    refs.write_marker(store, refs.MarkerDoc(gc="g1", seq=3, started=time.time(), expires=time.time() + 600))
    verifies: list[float] = []
    with refs.inflight(store, [A], owner="ns/x", heartbeat=3600) as reg:
        assert reg.gc_seen == {"g1": 3}

        def gc_moves_on() -> None:
            time.sleep(0.3)
            refs.write_marker(store, refs.MarkerDoc(gc="g1", seq=4, started=time.time(), expires=time.time() + 600))

        t = threading.Thread(target=gc_moves_on)
        t.start()
        reg.confirm(lambda: verifies.append(time.monotonic()), poll=0.05)
        t.join()
    assert len(verifies) == 2 and verifies[1] - verifies[0] >= 0.25


def test_confirm_ignores_expired_markers_and_markers_of_finished_gcs(store: Store) -> None:
    clock = Clock()
    refs.write_marker(store, refs.MarkerDoc(gc="dead", seq=1, started=0, expires=clock.t - refs.CLOCK_SKEW - 1))
    refs.write_marker(store, refs.MarkerDoc(gc="done", seq=1, started=0, expires=clock.t + 600))
    reg = refs.Registration(store=store, owner="x", objects=[A], clock=clock)
    reg.write()
    assert reg.gc_seen == {"done": 1}
    assert not reg.confirm_step(lambda: None)
    store.delete_many([refs.marker_rel("done")])
    assert reg.confirm_step(lambda: None)


def test_confirm_repairs_once(store: Store) -> None:
    state = {"present": False, "repairs": 0}

    def verify() -> None:
        if not state["present"]:
            raise VerifyFailed("1 object(s) missing")

    def repair() -> None:
        state["present"] = True
        state["repairs"] += 1

    with refs.inflight(store, [A], owner="x", heartbeat=3600) as reg:
        reg.confirm(verify, repair=repair)
    assert state["repairs"] == 1


def test_heartbeat_thread_renews(store: Store) -> None:
    with refs.inflight(store, [A], owner="x", ttl=1000, heartbeat=0.05) as reg:
        first = reg.expires
        time.sleep(0.3)
        assert reg.expires > first


def test_gc_batch_bumps_its_marker_before_reading_registrations(store: Store) -> None:
    """The GC half of the handshake, observed from the store: a registration written after a batch's marker
    bump is seen by that batch; confirm() waits for exactly one bump."""
    keep = put(store, b"about to be reused")
    t = time.time() + 48 * 3600
    run = GCRun(store, [], grace=timedelta(hours=24), dry_run=False, clock=lambda: t)
    for step in run.steps():
        if step == "plan":
            break
    assert run.queue and run.queue[0].md5 == keep
    reg = refs.Registration(store=store, owner="x", objects=[keep], clock=lambda: t)
    reg.write()
    assert reg.gc_seen == {run.id: 0}
    assert run.delete_batch() is True  # bumps to seq 1, then re-reads: sees the registration
    assert keep in objects_in(store)
    assert reg.pending_gcs() == {}
    run.finish()
