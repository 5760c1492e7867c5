"""Ensemble text to plain data, remembering the line of every mapping key and list item.

YAML is read with the YAML 1.2 core schema that DMS's Go parser uses, not PyYAML's YAML 1.1
defaults: only true/false are booleans (`country: NO` stays Norway), `22:22` is text, not the
sexagesimal number 1342, `0123` is decimal, and dates stay text. A key given twice is an error
(PyYAML keeps the last one silently, which would drop an allocation). Text starting with `{` is
tried as JSON first. Every failure of the third-party parsers becomes `EnsembleInvalid` with the
line and column where it was seen.
"""

from __future__ import annotations

import json
import re
from typing import Any

import msgspec

from nunet.errors import EnsembleInvalid, ValidationError

MAX_TEXT_BYTES = 1 << 20  # an ensemble is a few KiB; more is a mistake or an attack

# id(container) -> {key or index: 1-based line}. The ids stay valid while `data` lives.
Marks = dict[int, dict[Any, int]]


class Document(msgspec.Struct, frozen=True):
    data: object
    marks: Marks


def invalid(message: str, path: str | None = None) -> EnsembleInvalid:
    return EnsembleInvalid([ValidationError(message, path=path)])


def read_document(text: str | bytes) -> Document:
    if isinstance(text, bytes | bytearray | memoryview):
        if len(text) > MAX_TEXT_BYTES:
            raise invalid(f"file too large: {len(text)} bytes, at most {MAX_TEXT_BYTES}")
        try:
            text = bytes(text).decode("utf-8-sig")
        except UnicodeDecodeError as exc:
            raise invalid(f"not UTF-8 text (byte {exc.start})") from None
    if len(text) > MAX_TEXT_BYTES:
        raise invalid(f"file too large: {len(text)} characters, at most {MAX_TEXT_BYTES}")
    if text.lstrip().startswith("{"):
        try:
            return Document(json.loads(text, object_pairs_hook=_json_object), {})
        except (ValueError, RecursionError):
            pass  # YAML flow style also starts with "{": let the YAML parser say what is wrong
    return _read_yaml(text)


def _json_object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise ValueError(f"duplicate key {key!r}")
        out[key] = value
    return out


def _read_yaml(text: str) -> Document:
    import yaml

    loader = None
    try:
        loader = _loader_class()(text)  # the reader refuses control characters right here
        data = loader.get_single_data()
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        raise invalid(f"invalid YAML: {where}{exc.problem or exc.context}") from None
    except yaml.YAMLError as exc:
        raise invalid(f"invalid YAML: {' '.join(str(exc).split())}") from None
    except RecursionError:
        raise invalid("invalid YAML: nested too deeply") from None
    except Exception as exc:  # PyYAML's constructors raise ValueError & co. on odd scalars
        raise invalid(f"invalid YAML: {type(exc).__name__}: {exc}") from None
    finally:
        if loader is not None:
            loader.dispose()
    return Document(data, loader.line_marks)


_LOADER: Any = None


def _loader_class() -> Any:
    """Built on first use so that importing this module does not import PyYAML."""
    global _LOADER
    if _LOADER is not None:
        return _LOADER
    from yaml.composer import Composer
    from yaml.constructor import ConstructorError, SafeConstructor
    from yaml.nodes import MappingNode, ScalarNode
    from yaml.parser import Parser
    from yaml.reader import Reader
    from yaml.resolver import BaseResolver
    from yaml.scanner import Scanner

    MERGE = "tag:yaml.org,2002:merge"

    class Core12Resolver(BaseResolver):  # type: ignore[misc]
        pass

    for tag, pattern, first in (
        ("bool", r"true|True|TRUE|false|False|FALSE", "tTfF"),
        ("int", r"[-+]?[0-9]+|0o[0-7]+|0x[0-9a-fA-F]+", "-+0123456789"),
        ("float", r"[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?"
                  r"|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN)", "-+0123456789."),
        ("null", r"~|null|Null|NULL|", ["~", "n", "N", ""]),
        ("merge", r"<<", "<"),
    ):
        Core12Resolver.add_implicit_resolver(
            f"tag:yaml.org,2002:{tag}", re.compile(f"^(?:{pattern})$"), list(first)
        )

    class Constructor(SafeConstructor):  # type: ignore[misc]
        def __init__(self) -> None:
            super().__init__()
            self.line_marks: Marks = {}

        def construct_yaml_int(self, node: Any) -> int:
            value = self.construct_scalar(node)
            if value.startswith("0o"):
                return int(value[2:], 8)
            if value.startswith("0x"):
                return int(value[2:], 16)
            return int(value, 10)

        def construct_yaml_map(self, node: Any) -> Any:
            data: dict[Any, Any] = {}
            yield data
            if isinstance(node, MappingNode):
                seen: set[str] = set()
                for key_node, _ in node.value:
                    if isinstance(key_node, ScalarNode) and key_node.tag != MERGE:
                        if key_node.value in seen:
                            raise ConstructorError(
                                "while reading a mapping", node.start_mark,
                                f"key {key_node.value!r} given twice", key_node.start_mark,
                            )
                        seen.add(key_node.value)
            data.update(self.construct_mapping(node))
            # After flatten_mapping: merged keys first, explicit ones last (they win).
            self.line_marks[id(data)] = {
                self.construct_object(k): k.start_mark.line + 1 for k, _ in node.value
                if isinstance(k, ScalarNode)
            }

        def construct_yaml_seq(self, node: Any) -> Any:
            data: list[Any] = []
            yield data
            data.extend(self.construct_sequence(node))
            self.line_marks[id(data)] = {
                i: item.start_mark.line + 1 for i, item in enumerate(node.value)
            }

    Constructor.add_constructor("tag:yaml.org,2002:int", Constructor.construct_yaml_int)
    Constructor.add_constructor("tag:yaml.org,2002:map", Constructor.construct_yaml_map)
    Constructor.add_constructor("tag:yaml.org,2002:seq", Constructor.construct_yaml_seq)
    Constructor.add_constructor("tag:yaml.org,2002:timestamp",
                                SafeConstructor.construct_yaml_str)

    class Loader(Reader, Scanner, Parser, Composer, Constructor, Core12Resolver):  # type: ignore[misc]
        def __init__(self, stream: str) -> None:
            Reader.__init__(self, stream)
            Scanner.__init__(self)
            Parser.__init__(self)
            Composer.__init__(self)
            Constructor.__init__(self)
            Core12Resolver.__init__(self)

    _LOADER = Loader
    return Loader
