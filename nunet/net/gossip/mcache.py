"""The message cache: recent messages by id, for answering IWANT and advertising in IHAVE.

Windows, one per heartbeat: a message put in during the current window is advertised (IHAVE) for
`history_gossip` heartbeats and served (IWANT) for `history_length` heartbeats, then forgotten.
Entries hold the Publish item already encoded, so serving it costs no encoding.
"""

from __future__ import annotations

from collections import deque

import msgspec


class _Entry:
    __slots__ = ("item", "sent", "topic")

    def __init__(self, topic: str, item: msgspec.Raw) -> None:
        self.topic = topic
        self.item = item
        self.sent: dict[str, int] | None = None  # IWANT answers per peer


class MessageCache:
    def __init__(self, history_length: int, history_gossip: int) -> None:
        self._gossip = history_gossip
        self._entries: dict[bytes, _Entry] = {}
        # Newest window first; each maps topic -> ids put in during that heartbeat.
        self._windows: deque[dict[str, list[bytes]]] = deque(
            ({} for _ in range(history_length)), maxlen=history_length
        )

    def __len__(self) -> int:
        return len(self._entries)

    def put(self, msg_id: bytes, topic: str, item: msgspec.Raw) -> None:
        if msg_id in self._entries:
            return
        self._entries[msg_id] = _Entry(topic, item)
        self._windows[0].setdefault(topic, []).append(msg_id)

    def get(self, msg_id: bytes) -> msgspec.Raw | None:
        entry = self._entries.get(msg_id)
        return None if entry is None else entry.item

    def serve(self, msg_id: bytes, peer: str, limit: int) -> msgspec.Raw | None:
        """The item for `peer`'s IWANT, unless it was already served to it `limit` times."""
        entry = self._entries.get(msg_id)
        if entry is None:
            return None
        if entry.sent is None:
            entry.sent = {}
        count = entry.sent.get(peer, 0)
        if count >= limit:
            return None
        entry.sent[peer] = count + 1
        return entry.item

    def gossip_ids(self) -> dict[str, list[bytes]]:
        """Ids to advertise, by topic, newest first."""
        out: dict[str, list[bytes]] = {}
        for i, window in enumerate(self._windows):
            if i == self._gossip:
                break
            for topic, ids in window.items():
                out.setdefault(topic, []).extend(reversed(ids))
        return out

    def shift(self) -> None:
        """Starts a new window (called once per heartbeat), forgetting the oldest."""
        oldest = self._windows[-1]
        for ids in oldest.values():
            for msg_id in ids:
                del self._entries[msg_id]
        self._windows.appendleft({})
