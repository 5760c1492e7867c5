"""The records a node keeps for others (it is among the k closest to their keys).

Invariants:
- Only records that passed `check_record` are put here; the store itself does no crypto.
- Per (kind, key) at most `max_per_key` records, one per publisher: a higher seq from the same
  publisher replaces the old one, a lower or equal seq is ignored (no rollback, no equivocation).
  When a key is full, a newcomer displaces the record that expires soonest, if it outlives it.
- At most `max_records` records in all, so a flood of distinct keys costs bounded memory.
- Expired records are never returned, and `expire(now)` drops them.
"""

from __future__ import annotations

from nunet.net.dht.records import Record

Slot = tuple[int, str]  # (kind, key)


class RecordStore:
    def __init__(self, max_per_key: int = 20, max_records: int = 50_000) -> None:
        self.max_per_key = max_per_key
        self.max_records = max_records
        self._slots: dict[Slot, dict[str, Record]] = {}
        self._count = 0

    def put(self, record: Record) -> bool:
        """Whether the record was kept (False: older than what we hold, or no room)."""
        slot_key = (record.kind, record.key)
        slot = self._slots.get(slot_key)
        if slot is None:
            if self._count >= self.max_records:
                return False
            slot = self._slots[slot_key] = {}
        old = slot.get(record.publisher)
        if old is not None:
            if record.seq <= old.seq:
                return False
            slot[record.publisher] = record
            return True
        if self._count >= self.max_records:
            return False
        if len(slot) >= self.max_per_key:
            victim = min(slot.values(), key=lambda r: r.expires)
            if victim.expires >= record.expires:
                return False
            del slot[victim.publisher]
            self._count -= 1
        slot[record.publisher] = record
        self._count += 1
        return True

    def get(self, kind: int, key: str, now: float) -> list[Record]:
        slot = self._slots.get((kind, key))
        if not slot:
            return []
        return [r for r in slot.values() if r.expires > now]

    def remove(self, kind: int, key: str, publisher: str) -> bool:
        slot = self._slots.get((kind, key))
        if slot is None or slot.pop(publisher, None) is None:
            return False
        self._count -= 1
        if not slot:
            del self._slots[(kind, key)]
        return True

    def expire(self, now: float) -> int:
        """Drops expired records; returns how many."""
        dropped = 0
        for slot_key in list(self._slots):
            slot = self._slots[slot_key]
            for publisher in [p for p, r in slot.items() if r.expires <= now]:
                del slot[publisher]
                dropped += 1
            if not slot:
                del self._slots[slot_key]
        self._count -= dropped
        return dropped

    def keys(self) -> int:
        return len(self._slots)

    def __len__(self) -> int:
        return self._count
