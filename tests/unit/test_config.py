from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nunet.config import (
    Config,
    GeneralConfig,
    ObservabilityConfig,
    P2PConfig,
    RestConfig,
    decode_config,
    dump_config,
    get_value,
    load_config,
    parse_config,
)
from nunet.config.loader import parse_text
from nunet.config.schema import FIELD_KINDS
from nunet.errors import ConfigError

HOME = "/home/tester"


def load(
    tmp_path: Path,
    file: dict[str, Any] | None = None,
    env: dict[str, str] | None = None,
    overrides: dict[str, object] | None = None,
) -> Config:
    path = None
    if file is not None:
        path = tmp_path / "dms_config.json"
        path.write_text(json.dumps(file))
    return load_config(path, env={"HOME": HOME, **(env or {})}, overrides=overrides).config


def error(func: Any, *args: Any, **kwargs: Any) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        func(*args, **kwargs)
    return info.value


def decode_error(obj: object) -> ConfigError:
    return error(decode_config, obj)


# --- defaults ---------------------------------------------------------------------------------


def test_defaults_match_dms() -> None:
    c = Config()
    assert c.general == GeneralConfig(
        user_dir="~/.nunet", work_dir="~/nunet", data_dir="~/nunet/data", debug=False,
        host_city="", host_country="", host_continent="",
        port_available_range_from=16384, port_available_range_to=32768,
    )
    assert (c.rest.addr, c.rest.port, c.rest.unix_socket) == ("127.0.0.1", 9999, "")
    assert c.p2p.listen_address == ("/ip4/0.0.0.0/udp/9000/quic-v1",)
    assert (c.p2p.bootstrap_peers, c.p2p.memory, c.p2p.fd) == ((), 1024, 512)
    assert c.job.allow_privileged_docker is False
    o = c.observability
    assert (o.logging_level, o.log_file, o.max_size, o.max_backups, o.max_age) == (
        "INFO", "", 100, 3, 28,
    )
    assert (o.elasticsearch_enabled, o.elasticsearch_url, o.elasticsearch_index) == (
        False, "", "nunet-dms",
    )
    assert o.flush_interval == 5


def test_empty_object_gives_defaults() -> None:
    assert decode_config({}) == Config()
    assert parse_config(b"{}") == Config()
    assert decode_config({"rest": {}, "job": {}}) == Config()


def test_config_is_immutable() -> None:
    c = Config()
    with pytest.raises(AttributeError):
        c.rest.port = 1  # type: ignore[misc]
    with pytest.raises(AttributeError):
        c.rest = RestConfig()  # type: ignore[misc]


def test_loaded_config_has_home_expanded(tmp_path: Path) -> None:
    c = load(tmp_path, {"rest": {"unix_socket": "~/.nunet/api.sock"},
                        "observability": {"log_file": "~/logs/dms.log"}})
    assert c.general.user_dir == f"{HOME}/.nunet"
    assert c.general.work_dir == f"{HOME}/nunet"
    assert c.general.data_dir == f"{HOME}/nunet/data"
    assert c.rest.unix_socket == f"{HOME}/.nunet/api.sock"
    assert c.observability.log_file == f"{HOME}/logs/dms.log"


def test_resolved_leaves_other_paths_and_empty_values_alone() -> None:
    c = decode_config({"general": {"user_dir": "/srv/nunet", "work_dir": "rel/work"}})
    r = c.resolved("/h")
    assert (r.general.user_dir, r.general.work_dir, r.general.data_dir) == (
        "/srv/nunet", "rel/work", "/h/nunet/data",
    )
    assert (r.rest.unix_socket, r.observability.log_file) == ("", "")
    assert r.resolved("/other") == r  # idempotent
    assert c.general.data_dir == "~/nunet/data"  # the original is unchanged


def test_dump_config_round_trips() -> None:
    c = decode_config({"rest": {"port": 1234}, "p2p": {"bootstrap_peers": ["/ip4/1.2.3.4/udp/1"]}})
    text = dump_config(c)
    assert "\n  " in text  # pretty
    assert parse_config(text.encode()) == c


# --- precedence -------------------------------------------------------------------------------


def test_file_beats_defaults(tmp_path: Path) -> None:
    assert load(tmp_path, {"rest": {"port": 9001}}).rest.port == 9001


def test_env_beats_file(tmp_path: Path) -> None:
    c = load(tmp_path, {"rest": {"port": 9001}}, env={"DMS_REST_PORT": "9002"})
    assert c.rest.port == 9002


def test_override_beats_env_and_file(tmp_path: Path) -> None:
    c = load(tmp_path, {"rest": {"port": 9001}}, env={"DMS_REST_PORT": "9002"},
             overrides={"rest.port": 9003, "general.debug": True})
    assert c.rest.port == 9003
    assert c.general.debug is True


def test_each_layer_only_touches_its_keys(tmp_path: Path) -> None:
    c = load(tmp_path, {"rest": {"addr": "::1"}}, env={"DMS_REST_PORT": "9002"},
             overrides={"general.work_dir": "/w"})
    assert (c.rest.addr, c.rest.port, c.general.work_dir) == ("::1", 9002, "/w")
    assert c.rest.unix_socket == ""
    assert c.general.data_dir == f"{HOME}/nunet/data"


def test_override_none_means_not_given(tmp_path: Path) -> None:
    c = load(tmp_path, {"rest": {"port": 9001}}, overrides={"rest.port": None})
    assert c.rest.port == 9001


def test_override_text_is_parsed_like_env(tmp_path: Path) -> None:
    c = load(tmp_path, overrides={"rest.port": "9100", "general.debug": "yes",
                                  "p2p.bootstrap_peers": "/ip4/1.1.1.1/udp/1,/ip4/2.2.2.2/udp/2",
                                  "general.user_dir": Path("/u")})
    assert c.rest.port == 9100
    assert c.general.debug is True
    assert c.p2p.bootstrap_peers == ("/ip4/1.1.1.1/udp/1", "/ip4/2.2.2.2/udp/2")
    assert c.general.user_dir == "/u"


def test_bad_override_names_its_key(tmp_path: Path) -> None:
    assert error(load, tmp_path, overrides={"rest.nope": 1}).path == "rest.nope"
    assert error(load, tmp_path, overrides={"rest": 1}).path == "rest"
    e = error(load, tmp_path, overrides={"rest.port": 0})
    assert e.path == "rest.port"
    assert "command-line override" in e.message
    e = error(load, tmp_path, overrides={"rest.port": True})
    assert e.path == "rest.port"


def test_bootstrap_peers_alias(tmp_path: Path) -> None:
    c = load(tmp_path, env={"BOOTSTRAP_PEERS": "/ip4/1.1.1.1/udp/1, /ip4/2.2.2.2/udp/2"})
    assert c.p2p.bootstrap_peers == ("/ip4/1.1.1.1/udp/1", "/ip4/2.2.2.2/udp/2")
    c = load(tmp_path, env={"BOOTSTRAP_PEERS": "/ip4/1.1.1.1/udp/1",
                            "DMS_P2P_BOOTSTRAP_PEERS": "/ip4/9.9.9.9/udp/9"})
    assert c.p2p.bootstrap_peers == ("/ip4/9.9.9.9/udp/9",)
    c = load(tmp_path, {"p2p": {"bootstrap_peers": ["/f/1"]}},
             env={"BOOTSTRAP_PEERS": "/ip4/1.1.1.1/udp/1"})
    assert c.p2p.bootstrap_peers == ("/ip4/1.1.1.1/udp/1",)


def test_dms_env_for_every_section(tmp_path: Path) -> None:
    c = load(tmp_path, env={
        "DMS_GENERAL_USER_DIR": "/srv/u",
        "DMS_GENERAL_DEBUG": "1",
        "DMS_REST_ADDR": "0.0.0.0",
        "DMS_P2P_LISTEN_ADDRESS": '["/ip6/::/udp/9000/quic-v1"]',
        "DMS_P2P_FD": "2048",
        "DMS_JOB_ALLOW_PRIVILEGED_DOCKER": "TRUE",
        "DMS_OBSERVABILITY_LOGGING_LEVEL": "debug",
    })
    assert c.general.user_dir == "/srv/u"
    assert c.general.debug is True
    assert c.rest.addr == "0.0.0.0"
    assert c.p2p.listen_address == ("/ip6/::/udp/9000/quic-v1",)
    assert c.p2p.fd == 2048
    assert c.job.allow_privileged_docker is True
    assert c.observability.logging_level == "DEBUG"


def test_unrelated_dms_env_is_ignored(tmp_path: Path) -> None:
    c = load(tmp_path, env={"DMS_PASSPHRASE": "secret", "DMS_REST": "x", "DMS_": "",
                            "dms_rest_port": "1", "DMS_Rest_PORT": "x"})
    assert c == Config().resolved(HOME)


@pytest.mark.parametrize("var", ["DMS_REST_PROT", "DMS_P2P_", "DMS_GENERAL_user_dir"])
def test_unknown_key_in_known_section_env_is_an_error(tmp_path: Path, var: str) -> None:
    e = error(load, tmp_path, env={var: "1"})
    assert e.path == var


@pytest.mark.parametrize(
    ("var", "value"),
    [("DMS_REST_PORT", "abc"), ("DMS_REST_PORT", "1.5"), ("DMS_REST_PORT", ""),
     ("DMS_REST_PORT", "1_000"), ("DMS_GENERAL_DEBUG", "maybe"), ("DMS_GENERAL_DEBUG", ""),
     ("DMS_P2P_BOOTSTRAP_PEERS", "[1, 2]"), ("DMS_P2P_BOOTSTRAP_PEERS", "[oops"),
     ("BOOTSTRAP_PEERS", '["a",')],
)
def test_wrong_typed_env_names_the_variable(tmp_path: Path, var: str, value: str) -> None:
    e = error(load, tmp_path, env={var: value})
    assert e.path == var
    assert repr(value) in e.message


def test_env_value_failing_a_rule_says_where_it_came_from(tmp_path: Path) -> None:
    e = error(load, tmp_path, env={"DMS_REST_PORT": "70000"})
    assert e.path == "rest.port"
    assert "DMS_REST_PORT" in e.message
    e = error(load, tmp_path, env={"DMS_P2P_LISTEN_ADDRESS": "/ip4/1.2.3.4/udp/1,bad"})
    assert e.path == "p2p.listen_address[1]"
    assert "DMS_P2P_LISTEN_ADDRESS" in e.message


def test_file_errors_name_the_file(tmp_path: Path) -> None:
    e = error(load, tmp_path, {"rest": {"port": "x"}})
    assert e.path == "rest.port"
    assert "dms_config.json" in e.message
    e = error(load, tmp_path, {"rest": 5}, env={"DMS_REST_PORT": "1"})
    assert e.path == "rest"
    assert "dms_config.json" in e.message


def test_cross_field_rule_sees_the_merged_layers(tmp_path: Path) -> None:
    # The file alone is invalid (from >= default to); the env var makes the result valid.
    c = load(tmp_path, {"general": {"port_available_range_from": 40000}},
             env={"DMS_GENERAL_PORT_AVAILABLE_RANGE_TO": "50000"})
    assert (c.general.port_available_range_from, c.general.port_available_range_to) == (
        40000, 50000,
    )


def test_explicit_missing_path_is_an_error(tmp_path: Path) -> None:
    e = error(load_config, tmp_path / "nope.json", env={"HOME": HOME})
    assert "nope.json" in e.message
    e = error(load_config, tmp_path, env={"HOME": HOME})  # a directory
    assert str(tmp_path) in e.message


# --- env text parsing -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [("true", True), ("TRUE", True), ("1", True), ("yes", True), ("on", True), (" True ", True),
     ("false", False), ("0", False), ("No", False), ("off", False)],
)
def test_parse_bool(text: str, expected: bool) -> None:
    assert parse_text("bool", text, "X") is expected


@pytest.mark.parametrize("text", ["", "2", "y", "truthy", "nil"])
def test_parse_bool_rejects(text: str) -> None:
    assert error(parse_text, "bool", text, "X").path == "X"


@pytest.mark.parametrize(("text", "expected"), [("0", 0), ("9998", 9998), (" 42 ", 42),
                                                 ("-3", -3), ("+7", 7)])
def test_parse_int(text: str, expected: int) -> None:
    assert parse_text("int", text, "X") == expected


@pytest.mark.parametrize("text", ["", "0x10", "1e3", "1.0", "1_0", "٣", "true"])
def test_parse_int_rejects(text: str) -> None:
    assert error(parse_text, "int", text, "X").path == "X"


@pytest.mark.parametrize(
    ("text", "expected"),
    [("", []), ("a", ["a"]), ("a,b", ["a", "b"]), (" a , ,b, ", ["a", "b"]),
     ('["a", "b,c"]', ["a", "b,c"]), ("[]", [])],
)
def test_parse_list(text: str, expected: list[str]) -> None:
    assert parse_text("list", text, "X") == expected


def test_parse_str_is_verbatim() -> None:
    assert parse_text("str", "  a b ", "X") == "  a b "


# --- validation rules ---------------------------------------------------------------------------

GOOD = [
    {"rest": {"port": 1}}, {"rest": {"port": 65535}},
    {"rest": {"addr": "localhost"}}, {"rest": {"addr": "0.0.0.0"}}, {"rest": {"addr": "::1"}},
    {"general": {"port_available_range_from": 1024, "port_available_range_to": 65535}},
    {"general": {"port_available_range_from": 2000, "port_available_range_to": 2001}},
    {"p2p": {"memory": 1, "fd": 1}},
    {"p2p": {"listen_address": []}},
    {"p2p": {"listen_address": ["/ip4/127.0.0.1/tcp/9000", "/ip6/::/udp/9000/quic-v1"]}},
    {"observability": {"max_size": 0, "max_backups": 0, "max_age": 0}},
    {"observability": {"elasticsearch_enabled": True, "elasticsearch_url": "http://es:9200"}},
    {"observability": {"elasticsearch_url": "https://es"}},
] + [
    {"observability": {"logging_level": level}}
    for level in ("debug", "Info", "WARN", "warning", "ERROR")
]


@pytest.mark.parametrize("obj", GOOD)
def test_good_values(obj: dict[str, Any]) -> None:
    decode_config(obj)


BAD = [
    ({"rest": {"port": 0}}, "rest.port"),
    ({"rest": {"port": 65536}}, "rest.port"),
    ({"rest": {"port": -1}}, "rest.port"),
    ({"rest": {"addr": "example.com"}}, "rest.addr"),
    ({"rest": {"addr": ""}}, "rest.addr"),
    ({"rest": {"addr": "1.2.3.4:80"}}, "rest.addr"),
    ({"general": {"port_available_range_from": 1023}}, "general.port_available_range_from"),
    ({"general": {"port_available_range_to": 65536}}, "general.port_available_range_to"),
    ({"general": {"port_available_range_from": 3000, "port_available_range_to": 3000}},
     "general.port_available_range_to"),
    ({"general": {"port_available_range_from": 40000}}, "general.port_available_range_to"),
    ({"general": {"user_dir": ""}}, "general.user_dir"),
    ({"general": {"data_dir": "a\x00b"}}, "general.data_dir"),
    ({"observability": {"logging_level": "TRACE"}}, "observability.logging_level"),
    ({"observability": {"logging_level": ""}}, "observability.logging_level"),
    ({"p2p": {"memory": 0}}, "p2p.memory"),
    ({"p2p": {"fd": -5}}, "p2p.fd"),
    ({"p2p": {"memory": 2**63}}, "p2p.memory"),
    ({"observability": {"max_size": -1}}, "observability.max_size"),
    ({"observability": {"max_backups": -1}}, "observability.max_backups"),
    ({"observability": {"max_age": -1}}, "observability.max_age"),
    ({"observability": {"flush_interval": 0}}, "observability.flush_interval"),
    ({"observability": {"elasticsearch_enabled": True}}, "observability.elasticsearch_url"),
    ({"observability": {"elasticsearch_url": "es:9200"}}, "observability.elasticsearch_url"),
    ({"observability": {"elasticsearch_enabled": True, "elasticsearch_url": "http://es",
                        "elasticsearch_index": ""}}, "observability.elasticsearch_index"),
    ({"p2p": {"bootstrap_peers": [""]}}, "p2p.bootstrap_peers[0]"),
    ({"p2p": {"bootstrap_peers": ["/a", "/b c"]}}, "p2p.bootstrap_peers[1]"),
] + [
    ({"p2p": {"listen_address": ["/ip4/0.0.0.0/udp/9000", addr]}}, "p2p.listen_address[1]")
    for addr in [
        "", "ip4/0.0.0.0/udp/9000", "/dns4/example.com/udp/9000", "/ip4/0.0.0.0",
        "/ip4/0.0.0.0/udp", "/ip4/0.0.0.0/udp/x", "/ip4/0.0.0.0/udp/70000",
        "/ip4/999.0.0.1/udp/1", "/ip4/::/udp/1", "/ip6/1.2.3.4/udp/1", "/ip4/0.0.0.0//udp/1",
        "/ip4/0.0.0.0/sctp/1", "/ip4/0.0.0.0/udp/1/ quic",
    ]
]


@pytest.mark.parametrize(("obj", "path"), BAD)
def test_bad_values_name_their_path(obj: dict[str, Any], path: str) -> None:
    e = decode_error(obj)
    assert e.path == path
    assert e.message
    assert isinstance(e.to_dict()["field"], str)


@pytest.mark.parametrize(
    ("obj", "words"),
    [({"p2p": {"memory": 0}}, "at least 1, got 0"),
     ({"p2p": {"memory": 2**63}}, f"at most {2**63 - 1}"),
     ({"rest": {"port": 0}}, "between 1 and 65535, got 0")],
)
def test_range_messages_say_which_bound(obj: dict[str, Any], words: str) -> None:
    assert words in decode_error(obj).message


def test_rules_also_apply_on_construction() -> None:
    with pytest.raises(ConfigError) as info:
        RestConfig(port=0)
    assert info.value.path == "rest.port"
    with pytest.raises(ConfigError):
        P2PConfig(listen_address=("nope",))


def test_logging_level_is_normalised_upper() -> None:
    assert decode_config({"observability": {"logging_level": "warn"}}) == Config(
        observability=ObservabilityConfig(logging_level="WARN")
    )
    assert ObservabilityConfig(logging_level="error").logging_level == "ERROR"


# --- shape and types ----------------------------------------------------------------------------


def test_unknown_top_level_key() -> None:
    e = decode_error({"rets": {}})
    assert e.path == "rets"
    assert "rest" in e.message  # suggests the near miss


def test_unknown_nested_key() -> None:
    e = decode_error({"rest": {"prot": 1}})
    assert e.path == "rest.prot"
    assert "port" in e.message


@pytest.mark.parametrize(
    ("obj", "path", "expected"),
    [({"rest": {"port": "9999"}}, "rest.port", "int"),
     ({"rest": {"port": 9999.0}}, "rest.port", "int"),
     ({"rest": {"port": True}}, "rest.port", "int"),
     ({"general": {"debug": 1}}, "general.debug", "bool"),
     ({"general": {"debug": None}}, "general.debug", "bool"),
     ({"p2p": {"bootstrap_peers": "a,b"}}, "p2p.bootstrap_peers", "array"),
     ({"p2p": {"listen_address": ["/ip4/0.0.0.0/udp/1", 5]}}, "p2p.listen_address[1]", "str"),
     ({"rest": 5}, "rest", "object"),
     ({"rest": None}, "rest", "object")],
)
def test_wrong_type_names_path_and_expectation(obj: object, path: str, expected: str) -> None:
    e = decode_error(obj)
    assert e.path == path
    assert expected in e.message


@pytest.mark.parametrize("data", [b"[]", b"1", b'"x"', b"null"])
def test_top_level_must_be_an_object(data: bytes) -> None:
    e = error(parse_config, data)
    assert e.path is None
    assert "object" in e.message


@pytest.mark.parametrize(
    ("data", "line", "column"),
    [(b'{\n  "rest": {\n    "port": 1,,\n  }\n}', 3, 15),
     (b'{"rest": {"port": 1}', 1, 21),
     (b"", 1, 1),
     (b'{\n"rest": x}', 2, 9)],
)
def test_malformed_json_reports_line_and_column(data: bytes, line: int, column: int) -> None:
    e = error(parse_config, data, source="f.json")
    assert e.message.startswith("f.json: malformed JSON")
    assert f"line {line}, column {column}" in e.message


def test_deeply_nested_json_is_a_config_error() -> None:
    error(parse_config, b"[" * 100_000)


# --- get_value ----------------------------------------------------------------------------------


def test_get_value_leaf_and_section() -> None:
    c = decode_config({"rest": {"port": 1234}})
    assert get_value(c, "rest.port") == 1234
    assert get_value(c, "p2p.listen_address") == ["/ip4/0.0.0.0/udp/9000/quic-v1"]
    assert get_value(c, "rest") == {"addr": "127.0.0.1", "port": 1234, "unix_socket": ""}
    assert get_value(c, "p2p")["bootstrap_peers"] == []  # type: ignore[index]


@pytest.mark.parametrize("key", ["", "nope", "rest.", "rest.nope", "rest.port.x", ".port", "REST"])
def test_get_value_unknown_key(key: str) -> None:
    assert error(get_value, Config(), key).path == key


def test_every_field_has_a_text_form() -> None:
    assert set(FIELD_KINDS) == {"general", "rest", "p2p", "job", "observability"}
    for section, fields in FIELD_KINDS.items():
        for name in fields:
            get_value(Config(), f"{section}.{name}")


# --- fuzz: anything JSON-shaped gives a Config or a ConfigError ---------------------------------

json_scalars = (
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=30)
)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner,
                                                                max_size=4),
    max_leaves=20,
)
field_values = st.one_of(
    json_values,
    st.booleans(),
    st.sampled_from(["/ip4/0.0.0.0/udp/1", "localhost", "::1", "INFO", "http://x", "~/a", ""]),
    st.integers(min_value=-2, max_value=70000),
    st.lists(st.sampled_from(["/ip4/1.2.3.4/udp/9", "/ip6/::/tcp/1", "x", ""]), max_size=3),
)
sections = st.sampled_from(sorted(FIELD_KINDS)) | st.text(max_size=8)
shaped = st.dictionaries(
    sections,
    st.one_of(
        json_values,
        st.dictionaries(
            st.sampled_from(sorted({n for f in FIELD_KINDS.values() for n in f})) | st.text(),
            field_values,
            max_size=6,
        ),
    ),
    max_size=5,
)
# Known sections and keys with plausible values, so the fuzz reaches the type checks and the rules.
well_shaped = st.fixed_dictionaries(
    {},
    optional={
        name: st.dictionaries(st.sampled_from(sorted(fields)), field_values, max_size=4)
        for name, fields in FIELD_KINDS.items()
    },
)
any_config_json = st.one_of(well_shaped, shaped, json_values)
fuzz = settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow], deadline=None)


def outcome(func: Any, arg: object) -> Config | ConfigError:
    try:
        return func(arg)  # type: ignore[no-any-return]
    except ConfigError as e:
        return e


@fuzz
@given(any_config_json)
def test_fuzz_decode_only_raises_config_error(obj: object) -> None:
    result = outcome(decode_config, obj)
    if isinstance(result, ConfigError):
        assert result.message
    else:
        assert isinstance(result, Config)
        assert decode_config(msgspec.json.decode(dump_config(result).encode())) == result


@fuzz
@given(any_config_json)
def test_fuzz_parse_json_only_raises_config_error(obj: object) -> None:
    result = outcome(parse_config, msgspec.json.encode(obj))
    assert isinstance(result, Config) or result.message


@fuzz
@given(st.binary(max_size=64) | st.text(max_size=64).map(str.encode))
def test_fuzz_garbage_bytes_only_raise_config_error(data: bytes) -> None:
    result = outcome(parse_config, data)
    assert isinstance(result, Config) or result.message
