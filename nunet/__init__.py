"""nunet: a decentralized compute node (NuNet DMS v0.5 scope)."""

__version__ = "0.5.0.dev0"
