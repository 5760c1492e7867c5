"""Executors: run an allocation's container (`docker`) or pretend to (`null`). See README.md."""
