"""Writes deployment records the way `DeploymentService` does (`sync=False`, group commit) until
killed; run by test_store_group_commit.py.

The group commit's interval is an hour and its one fsync runs before the first write, so no
record is ever fsynced: they live in the WAL in the page cache alone, which is what must survive
a killed process.
Record i is created, then moved to Committing with a second write; the line `<i>` on stdout
means both writes returned before it was written.
"""

from __future__ import annotations

import sys
from pathlib import Path

import msgspec

from nunet.db import Repository, Store
from nunet.jobs.lifecycle import DeploymentStatus
from nunet.jobs.orchestration import new_record
from nunet.jobs.records import Change, DeploymentRecord
from nunet.jobs.spec import Ensemble, parse_ensemble

NAMESPACE = "deployment"  # DeploymentService's
ENSEMBLE = """version: "V1"
allocations:
  hello:
    type: task
    executor: null
    resources: {cpu: {cores: 0.01}, ram: {size: 8MiB}, disk: {size: 8MiB}}
    execution: {type: null, cmd: ["echo", "hi"]}
nodes:
  node1:
    allocations: [hello]
"""


def deployment_id(i: int) -> str:
    return f"{i:032x}"


def created(i: int, ensemble: Ensemble) -> DeploymentRecord:
    return new_record(deployment_id(i), ensemble, 1000.0 + i, 60.0)


def committing(i: int, ensemble: Ensemble) -> DeploymentRecord:
    rec = created(i, ensemble)
    now = rec.created_at + 0.5
    # Varying sizes so that a kill often lands inside a WAL write.
    reason = "x" * ((i * 7919) % 8192)
    history = [*rec.history, Change(now, DeploymentStatus.COMMITTING, reason)]
    return msgspec.structs.replace(rec, status=DeploymentStatus.COMMITTING, reason=reason,
                                   updated_at=now, history=history)


def main() -> None:
    store = Store.open(Path(sys.argv[1]), sync_interval_s=3600.0)
    records = Repository(store, NAMESPACE, DeploymentRecord)
    ensemble = parse_ensemble(ENSEMBLE)
    i = len(records.ids())
    store.sync_soon().result()  # the first fsync runs at once; the next one is an hour away
    print("ready", flush=True)
    while True:
        records.create(deployment_id(i), created(i, ensemble), sync=False)
        records.put(deployment_id(i), committing(i, ensemble), sync=False)
        print(i, flush=True)
        i += 1


if __name__ == "__main__":
    main()
