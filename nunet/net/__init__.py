"""Peer-to-peer networking: QUIC transport, peers, DHT, gossip, QoS (see README.md)."""
