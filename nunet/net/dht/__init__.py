"""Kademlia DHT: peer discovery and signed records (see README.md)."""

from nunet.net.dht.core import DhtConfig, DhtCore, DhtStats
from nunet.net.dht.ids import node_id
from nunet.net.dht.lookup import Lookup
from nunet.net.dht.records import (
    Reason,
    Record,
    RecordKind,
    check_record,
    record_addrs,
    sign_record,
    validate_record,
)
from nunet.net.dht.routing import RoutingTable
from nunet.net.dht.service import DhtService, DhtSnapshot, LookupResult

__all__ = [
    "DhtConfig",
    "DhtCore",
    "DhtService",
    "DhtSnapshot",
    "DhtStats",
    "Lookup",
    "LookupResult",
    "Reason",
    "Record",
    "RecordKind",
    "RoutingTable",
    "check_record",
    "node_id",
    "record_addrs",
    "sign_record",
    "validate_record",
]
