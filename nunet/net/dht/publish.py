"""The records this node publishes itself, and when to publish them again.

Records carry a signed expiry, so keeping one alive means re-signing it: every
`republish_interval` a publication is renewed (seq up, expiry pushed out by `ttl`) and sent again
to the k nodes closest to its key, which by then may be other nodes than last time.

`seq` is max(previous + 1, now in milliseconds): it grows within a run and, as long as the
wall clock does not go back, across restarts too, so a restarted node's records supersede the
ones it published before.
"""

from __future__ import annotations

from nunet.crypto.keys import KeyPair
from nunet.errors import ValidationError
from nunet.net.dht.records import Record, RecordKind, sign_record
from nunet.net.dht.store import Slot


class Publications:
    def __init__(self, keypair: KeyPair, ttl: int, republish_interval: float) -> None:
        if republish_interval >= ttl:
            raise ValidationError(
                "must be shorter than the record ttl", path="dht.republish_interval"
            )
        self._keypair = keypair
        self.ttl = ttl
        self.republish_interval = republish_interval
        self._own: dict[Slot, tuple[Record, float]] = {}  # slot -> (record, published at)

    def publish(self, kind: RecordKind, key: str, value: bytes, now: float) -> Record:
        """A freshly signed record for (kind, key) replacing any earlier one of ours."""
        old = self._own.get((int(kind), key))
        seq = max(old[0].seq + 1 if old else 0, int(now * 1000))
        record = sign_record(self._keypair, kind, key, value, seq, int(now) + self.ttl)
        self._own[(int(kind), key)] = (record, now)
        return record

    def due(self, now: float) -> list[Record]:
        """Renews and returns every publication whose last publish is `republish_interval` old."""
        out = []
        for (kind, key), (record, at) in list(self._own.items()):
            if now - at >= self.republish_interval:
                out.append(self.publish(RecordKind(kind), key, record.value, now))
        return out

    def get(self, kind: int, key: str) -> Record | None:
        entry = self._own.get((kind, key))
        return entry[0] if entry else None

    def withdraw(self, kind: int, key: str) -> bool:
        """Stops republishing; the copies on other nodes die at their expiry."""
        return self._own.pop((kind, key), None) is not None

    def records(self) -> list[Record]:
        return [record for record, _ in self._own.values()]
