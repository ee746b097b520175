"""In-flight reference registrations: how a snapshot tells GC "these objects are mine" before pushing.

Interface used by engine/snapshot.py (keep it):

    with refs.inflight(store, objects, owner="ns/name") as reg:
        push()                       # dvc push
        reg.confirm(verify)          # verify() re-checks every object; reg re-runs it if a GC overlapped
        publish()                    # manifest written last
    # leaving the block releases the registration (also on error)

First version: registration file only; the GC protocol (engine/gc.py) hardens this.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from terrasnap.engine.store import INFLIGHT_PREFIX, Store


@dataclass
class Registration:
    store: Store
    owner: str
    objects: list[str]
    id: str = field(default_factory=lambda: uuid.uuid4().hex)

    @property
    def rel(self) -> str:
        return f"{INFLIGHT_PREFIX}/{self.id}.json"

    def write(self) -> None:
        doc = {"owner": self.owner, "created": time.time(), "objects": self.objects}
        self.store.write_bytes(self.rel, json.dumps(doc, sort_keys=True).encode())

    def confirm(self, verify: Callable[[], None]) -> None:
        verify()

    def release(self) -> None:
        self.store.delete_many([self.rel])


@contextmanager
def inflight(store: Store, objects: list[str], owner: str) -> Iterator[Registration]:
    reg = Registration(store=store, owner=owner, objects=sorted(set(objects)))
    reg.write()
    try:
        yield reg
    finally:
        reg.release()
