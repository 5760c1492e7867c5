"""Local REST API: local callers only, JSON errors, OpenAPI generated from the route table."""
