"""The `nunet` command line."""
