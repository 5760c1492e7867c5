"""The OpenAPI 3.1 document, generated from the route table so it always matches what is served."""

from __future__ import annotations

import re
from typing import Any

import msgspec

from nunet import __version__
from nunet.api.routes import API_PREFIX, ROUTES, ErrorReply, Route

OPENAPI_PATH = f"{API_PREFIX}/openapi.json"

REF = "#/components/schemas/{name}"


def _operation(route: Route, schemas: dict[str, Any], index: int) -> dict[str, Any]:
    op: dict[str, Any] = {
        "summary": route.summary,
        "operationId": route.method.lower() + re.sub(r"[/{}.-]+", "_", route.path).rstrip("_"),
        "responses": {
            "200": {
                "description": "OK",
                "content": {"application/json": {"schema": schemas[f"r{index}"]}},
            },
            "default": {
                "description": "Error",
                "content": {"application/json": {"schema": schemas["error"]}},
            },
        },
    }
    if route.body is not None:
        op["requestBody"] = {
            "required": True,
            "content": {"application/json": {"schema": schemas[f"b{index}"]}},
        }
    if route.path_params:
        op["parameters"] = [
            {"name": name, "in": "path", "required": True, "schema": {"enum": list(values)}}
            for name, values in route.path_params.items()
        ]
    return op


def build_openapi() -> dict[str, Any]:
    types: list[Any] = [ErrorReply]
    keys = ["error"]
    for i, route in enumerate(ROUTES):
        types.append(route.response)
        keys.append(f"r{i}")
        if route.body is not None:
            types.append(route.body)
            keys.append(f"b{i}")
    refs, components = msgspec.json.schema_components(types, ref_template=REF)
    schemas = dict(zip(keys, refs, strict=True))
    paths: dict[str, dict[str, Any]] = {}
    for i, route in enumerate(ROUTES):
        paths.setdefault(route.path, {})[route.method.lower()] = _operation(route, schemas, i)
    paths[OPENAPI_PATH] = {
        "get": {
            "summary": "This document",
            "operationId": "get_openapi",
            "responses": {"200": {"description": "OpenAPI 3.1 document",
                                  "content": {"application/json": {"schema": {"type": "object"}}}}},
        }
    }
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "nunet local API",
            "version": __version__,
            "description": "Answers only callers on this machine (loopback or unix socket).",
        },
        "paths": paths,
        "components": {"schemas": components},
    }
