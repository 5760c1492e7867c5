"""Telemetry: structured logs now; tracing, metrics and exporters come with the observability
issue."""
