"""Writes records until killed; run by test_store_crash.py.

Each record is one synced batch that writes the record and bumps the counter, so after any
crash the counter must equal the number of records. A line `<i>` on stdout means record i was
committed (the batch returned) before the line was written.
"""

from __future__ import annotations

import sys
from pathlib import Path

import msgspec

from nunet.db import Repository, Store

COUNTER = b"meta/count"


class Record(msgspec.Struct, frozen=True):
    index: int
    payload: bytes


def record(i: int) -> Record:
    # Sizes vary up to 16 KiB so that a kill often lands inside a WAL write.
    return Record(i, bytes([i % 251]) * ((i * 7919) % 16384))


def main() -> None:
    store = Store.open(Path(sys.argv[1]))
    records = Repository(store, "rec", Record)
    raw = store.get(COUNTER)
    i = 0 if raw is None else msgspec.msgpack.decode(raw, type=int)
    print("ready", flush=True)
    while True:
        with store.batch() as b:
            b.put(records.key_for(f"{i:08d}"), records.encode(record(i)))
            b.put(COUNTER, msgspec.msgpack.encode(i + 1))
        print(i, flush=True)
        i += 1


if __name__ == "__main__":
    main()
