"""Stream framing: every case runs against the compiled module and its pure-Python twin (the
`framing` fixture), and a differential fuzz test holds the two to identical results."""

from __future__ import annotations

import array
import gc
from types import ModuleType
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nunet._native._reference import framing as reference
from nunet.errors import DecodeError, FrameTooLarge, LocalProtocolError

FUZZ = settings(
    max_examples=300,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
MAX_VARINT = (1 << 62) - 1


def varint(value: int, size: int | None = None) -> bytes:
    """Test oracle, written apart from the code under test: RFC 9000 §16, any allowed size."""
    if size is None:
        size = next(s for s in (1, 2, 4, 8) if value < 1 << (8 * s - 2))
    assert value < 1 << (8 * size - 2)
    prefix = {1: 0, 2: 1, 4: 2, 8: 3}[size]
    return ((prefix << (8 * size - 2)) | value).to_bytes(size, "big")


def frame(ftype: int, payload: bytes, size: int | None = None) -> bytes:
    return varint(len(payload), size) + bytes([ftype]) + payload


def plain(frames: list[tuple[int, memoryview]]) -> list[tuple[int, bytes]]:
    return [(t, bytes(p)) for t, p in frames]


def feed_all(decoder: Any, chunks: list[bytes]) -> list[tuple[int, bytes]]:
    return [f for chunk in chunks for f in plain(decoder.feed(chunk))]


def feed_split(decoder: Any, data: bytes, cuts: list[int]) -> list[tuple[int, bytes]]:
    out: list[tuple[int, bytes]] = []
    start = 0
    for cut in [*sorted(cuts), len(data)]:
        out += plain(decoder.feed(data[start:cut]))
        start = cut
    return out


SAMPLE = [(1, b""), (2, b"a"), (3, bytes(range(63))), (4, bytes(64)), (5, b"x" * 300), (6, b"z")]
SAMPLE_STREAM = b"".join(frame(t, p) for t, p in SAMPLE)


# --- encoding -------------------------------------------------------------------------------------


@pytest.mark.parametrize("size", [0, 1, 63, 64, 16383, 16384, 1 << 20])
def test_round_trip(framing: ModuleType, size: int) -> None:
    payload = bytes(i % 251 for i in range(size))
    wire = framing.encode_frame(7, payload)
    assert wire == frame(7, payload)
    decoder = framing.FrameDecoder()
    frames = decoder.feed(wire)
    assert plain(frames) == [(7, payload)]
    assert decoder.buffered == 0
    assert decoder.frames_decoded == 1
    assert decoder.bytes_decoded == len(wire)


@pytest.mark.parametrize(
    ("size", "header"), [(0, 1), (63, 1), (64, 2), (16383, 2), (16384, 4), (1 << 20, 4)]
)
def test_encoder_writes_the_shortest_varint(framing: ModuleType, size: int, header: int) -> None:
    wire = framing.encode_frame(0xFF, bytes(size))
    assert len(wire) == header + 1 + size
    assert wire[:header] == varint(size)
    assert wire[header] == 0xFF


@pytest.mark.parametrize(
    "payload", [b"abc", bytearray(b"abc"), memoryview(b"xabcx")[1:4], memoryview(b"abc")]
)
def test_encode_accepts_any_contiguous_bytes(framing: ModuleType, payload: Any) -> None:
    assert framing.encode_frame(9, payload) == frame(9, b"abc")
    assert framing.encode_frames([(9, payload), (9, payload)]) == frame(9, b"abc") * 2


def test_encode_treats_other_formats_as_raw_bytes(framing: ModuleType) -> None:
    words = array.array("I", [1, 2, 3])
    assert framing.encode_frame(1, memoryview(words)) == frame(1, words.tobytes())
    square = memoryview(bytes(range(4))).cast("B", (2, 2))
    assert framing.encode_frame(1, square) == frame(1, bytes(range(4)))


def test_encode_frames_empty_and_generator(framing: ModuleType) -> None:
    assert framing.encode_frames([]) == b""
    assert framing.encode_frames((t, p) for t, p in SAMPLE) == SAMPLE_STREAM
    assert framing.encode_frames([[1, b"ab"]]) == frame(1, b"ab")


@pytest.mark.parametrize("ftype", [-1, 256, 1 << 70, "1", 1.0, None, b"\x01"])
def test_encode_rejects_bad_types(framing: ModuleType, ftype: Any) -> None:
    with pytest.raises(LocalProtocolError, match="frame type"):
        framing.encode_frame(ftype, b"x")
    with pytest.raises(LocalProtocolError, match="frame type"):
        framing.encode_frames([(1, b"ok"), (ftype, b"x")])


@pytest.mark.parametrize("payload", ["text", 12, None, [1, 2], memoryview(b"abcdef")[::2]])
def test_encode_rejects_bad_payloads(framing: ModuleType, payload: Any) -> None:
    with pytest.raises(LocalProtocolError, match="payload"):
        framing.encode_frame(1, payload)
    with pytest.raises(LocalProtocolError, match="payload"):
        framing.encode_frames([(1, payload)])


@pytest.mark.parametrize("frames", [None, 3, [b"ab"], [(1,)], [(1, b"a", b"b")], [1]])
def test_encode_frames_rejects_bad_shapes(framing: ModuleType, frames: Any) -> None:
    with pytest.raises(LocalProtocolError):
        framing.encode_frames(frames)


def test_encode_frames_survives_the_list_changing_under_it(framing: ModuleType) -> None:
    frames: list[Any] = []

    class Sneaky:
        """A pair that empties the caller's list while it is being unpacked."""

        def __iter__(self) -> Any:
            frames.clear()
            return iter((2, b"bb"))

    frames += [(1, b"a"), Sneaky(), (3, b"c")]
    assert framing.encode_frames(frames) == frame(1, b"a") + frame(2, b"bb") + frame(3, b"c")


@given(st.lists(st.tuples(st.integers(0, 255), st.binary(max_size=300)), max_size=20))
@FUZZ
def test_encode_frames_is_concatenated_encode_frame(
    framing: ModuleType, frames: list[tuple[int, bytes]]
) -> None:
    assert framing.encode_frames(frames) == b"".join(framing.encode_frame(t, p) for t, p in frames)
    assert framing.encode_frames(frames) == b"".join(frame(t, p) for t, p in frames)


# --- varints --------------------------------------------------------------------------------------


# RFC 9000 Appendix A.1 sample encodings.
RFC_VECTORS = [
    ("c2197c5eff14e88c", 151288809941952652),
    ("9d7f3e7d", 494878333),
    ("7bbd", 15293),
    ("25", 37),
    ("4025", 37),
]


@pytest.mark.parametrize(("hexed", "value"), RFC_VECTORS)
def test_rfc9000_vectors(framing: ModuleType, hexed: str, value: int) -> None:
    header = bytes.fromhex(hexed) + b"\x05"
    if value < 1 << 16:
        payload = bytes(value)
        assert plain(framing.FrameDecoder().feed(header + payload)) == [(5, payload)]
    decoder = framing.FrameDecoder(max_frame_size=value)
    assert decoder.feed(header) == []
    assert decoder.buffered == len(header)
    with pytest.raises(FrameTooLarge, match=f"declares {value} payload bytes"):
        framing.FrameDecoder(max_frame_size=value - 1).feed(header)


BOUNDARIES = [1, 62, 63, 64, 16383, 16384, (1 << 30) - 1, 1 << 30, MAX_VARINT]


@pytest.mark.parametrize("value", BOUNDARIES)
@pytest.mark.parametrize("whole", [True, False], ids=["whole", "bytewise"])
def test_varint_boundaries(framing: ModuleType, value: int, whole: bool) -> None:
    header = varint(value) + b"\x01"
    decoder = framing.FrameDecoder(max_frame_size=MAX_VARINT)
    chunks = [header] if whole else [header[i : i + 1] for i in range(len(header))]
    for chunk in chunks:
        assert decoder.feed(chunk) == []
    assert decoder.buffered == len(header)
    if value <= 16384:
        payload = bytes(value)
        assert plain(decoder.feed(payload)) == [(1, payload)]
    too_small = framing.FrameDecoder(max_frame_size=value - 1)
    with pytest.raises(FrameTooLarge, match=f"declares {value} payload"):
        feed_all(too_small, chunks)


@pytest.mark.parametrize("size", [1, 2, 4, 8])
def test_non_minimal_varints_are_accepted(framing: ModuleType, size: int) -> None:
    wire = frame(3, b"hello", size) + frame(4, b"", size)
    assert plain(framing.FrameDecoder().feed(wire)) == [(3, b"hello"), (4, b"")]
    assert feed_split(framing.FrameDecoder(), wire, list(range(len(wire)))) == [
        (3, b"hello"),
        (4, b""),
    ]


# --- zero copy and buffering ----------------------------------------------------------------------


@pytest.mark.parametrize("kind", [bytes, bytearray])
def test_complete_frames_are_read_only_views_of_the_fed_object(
    framing: ModuleType, kind: type
) -> None:
    data = kind(SAMPLE_STREAM)
    frames = framing.FrameDecoder().feed(data)
    assert plain(frames) == SAMPLE
    for _, payload in frames:
        assert payload.obj is data
        assert payload.readonly
        assert payload.format == "B"
        assert payload.c_contiguous


def test_views_of_a_memoryview_share_its_exporter(framing: ModuleType) -> None:
    base = b"??" + SAMPLE_STREAM
    frames = framing.FrameDecoder().feed(memoryview(base)[2:])
    assert plain(frames) == SAMPLE
    assert all(payload.obj is base for _, payload in frames)


def test_payload_views_behave_like_memoryview_slices(framing: ModuleType) -> None:
    data = frame(1, b"0123456789") + frame(2, b"")
    (t1, p1), (t2, p2) = framing.FrameDecoder().feed(data)
    expected = memoryview(data).toreadonly()[2:12]
    assert (t1, t2) == (1, 2)
    assert p1 == expected
    assert (len(p1), p1.nbytes, p1.shape, p1.strides) == (10, 10, (10,), (1,))
    assert p1.tobytes() == bytes(p1) == b"0123456789"
    assert bytes(p1[2:5]) == b"234"
    assert p1[-1] == ord("9")
    assert hash(p1) == hash(b"0123456789")
    assert p1.cast("c")[0] == b"0"
    assert (len(p2), bytes(p2)) == (0, b"")
    with pytest.raises(TypeError):
        p1[0] = 0  # type: ignore[index]


def test_payloads_outlive_the_decoder_and_the_caller_reference(framing: ModuleType) -> None:
    decoder = framing.FrameDecoder()
    frames = decoder.feed(bytes(SAMPLE_STREAM))
    head = decoder.feed(SAMPLE_STREAM[:7])
    tail = decoder.feed(SAMPLE_STREAM[7:])
    del decoder
    gc.collect()
    assert plain(frames) == SAMPLE
    assert plain(head + tail) == SAMPLE


def test_split_frame_is_copied_and_the_rest_stays_zero_copy(framing: ModuleType) -> None:
    first, second = frame(1, b"A" * 100), frame(2, b"B" * 10)
    decoder = framing.FrameDecoder()
    part1 = first[:50]
    part2 = first[50:] + second
    assert decoder.feed(part1) == []
    assert decoder.buffered == 50
    (t1, p1), (t2, p2) = decoder.feed(part2)
    assert (t1, bytes(p1), t2, bytes(p2)) == (1, b"A" * 100, 2, b"B" * 10)
    assert p1.obj is not part1
    assert p1.obj is not part2
    assert p1.readonly
    assert p2.obj is part2
    assert decoder.buffered == 0


def test_pending_payload_grows_only_with_received_bytes(framing: ModuleType) -> None:
    payload = bytes(i % 253 for i in range(1 << 20))
    wire = frame(8, payload)
    decoder = framing.FrameDecoder()
    fed = 0
    frames: list[tuple[int, memoryview]] = []
    for start in range(0, len(wire), 65536):
        chunk = wire[start : start + 65536]
        frames += decoder.feed(chunk)
        fed += len(chunk)
        assert decoder.buffered == (fed if not frames else 0)
    assert plain(frames) == [(8, payload)]
    assert decoder.bytes_decoded == len(wire)


@pytest.mark.parametrize(
    "stream",
    [SAMPLE_STREAM, frame(1, bytes(16384)) + frame(2, b"ab") + frame(3, b"", 8)],
    ids=["small", "16KiB"],
)
def test_every_split_point_gives_the_same_frames(framing: ModuleType, stream: bytes) -> None:
    whole = plain(framing.FrameDecoder().feed(stream))
    assert whole
    for cut in range(len(stream) + 1):
        decoder = framing.FrameDecoder()
        assert feed_split(decoder, stream, [cut]) == whole
        assert decoder.buffered == 0
        assert decoder.frames_decoded == len(whole)
        assert decoder.bytes_decoded == len(stream)


def test_byte_by_byte(framing: ModuleType) -> None:
    decoder = framing.FrameDecoder()
    out = feed_split(decoder, SAMPLE_STREAM, list(range(len(SAMPLE_STREAM))))
    assert out == SAMPLE


def test_counters_and_buffered_account_for_every_byte(framing: ModuleType) -> None:
    decoder = framing.FrameDecoder()
    fed = 0
    for start in range(0, len(SAMPLE_STREAM), 37):
        chunk = SAMPLE_STREAM[start : start + 37]
        decoder.feed(chunk)
        fed += len(chunk)
        assert decoder.bytes_decoded + decoder.buffered == fed
    assert decoder.frames_decoded == len(SAMPLE)


def test_other_buffer_formats_are_read_as_raw_bytes(framing: ModuleType) -> None:
    stream = frame(1, b"abc") + frame(2, b"d")
    words = array.array("B", stream)
    assert plain(framing.FrameDecoder().feed(words)) == [(1, b"abc"), (2, b"d")]
    padded = stream + bytes(-len(stream) % 4)
    ints = array.array("I")
    ints.frombytes(padded)
    decoder = framing.FrameDecoder()
    frames = decoder.feed(memoryview(ints))
    assert plain(frames)[:2] == [(1, b"abc"), (2, b"d")]
    assert frames[0][1].obj is ints


# --- limits and errors ----------------------------------------------------------------------------


def test_default_limits(framing: ModuleType) -> None:
    assert framing.DEFAULT_MAX_FRAME_SIZE == 1 << 20
    assert framing.FrameDecoder().max_frame_size == 1 << 20
    assert framing.FrameDecoder(max_frame_size=5).max_frame_size == 5


@pytest.mark.parametrize("whole", [True, False], ids=["whole", "bytewise"])
def test_size_at_the_limit_passes_and_one_more_fails_before_the_payload(
    framing: ModuleType, whole: bool
) -> None:
    limit = 20000
    ok = frame(1, bytes(limit))
    decoder = framing.FrameDecoder(max_frame_size=limit)
    assert plain(decoder.feed(ok)) == [(1, bytes(limit))]

    decoder = framing.FrameDecoder(max_frame_size=limit)
    header = varint(limit + 1)  # the varint alone: not even the type byte has arrived
    chunks = [header] if whole else [header[i : i + 1] for i in range(len(header))]
    with pytest.raises(FrameTooLarge, match=f"declares {limit + 1} payload bytes"):
        feed_all(decoder, chunks)
    assert decoder.buffered <= len(header)


def test_too_large_after_good_frames_in_the_same_feed(framing: ModuleType) -> None:
    decoder = framing.FrameDecoder(max_frame_size=100)
    with pytest.raises(FrameTooLarge):
        decoder.feed(frame(1, b"ok") + varint(101) + b"\x01" + bytes(101))
    # Frames decoded before the error in the failing call are lost with it (documented).
    assert decoder.frames_decoded == 0


@pytest.mark.parametrize("whole", [True, False], ids=["whole", "split"])
def test_unknown_type_is_named(framing: ModuleType, whole: bool) -> None:
    decoder = framing.FrameDecoder(known_types=bytes([1, 2, 0xFE]))
    stream = frame(1, b"a") + frame(0xFE, b"") + frame(3, b"zz")
    if whole:
        with pytest.raises(DecodeError, match=r"unknown frame type 0x03 \(3\)"):
            decoder.feed(stream)
    else:
        # The third frame's length arrives first; its type byte fails alone.
        assert plain(decoder.feed(stream[:6])) == [(1, b"a"), (0xFE, b"")]
        assert decoder.buffered == 1
        with pytest.raises(DecodeError, match=r"unknown frame type 0x03"):
            decoder.feed(stream[6:7])


def test_known_types_empty_rejects_everything(framing: ModuleType) -> None:
    with pytest.raises(DecodeError, match="unknown frame type 0x00"):
        framing.FrameDecoder(known_types=b"").feed(frame(0, b""))


@pytest.mark.parametrize(
    "bad", [frame(9, b"x"), varint(2000) + b"\x01"], ids=["unknown-type", "too-large"]
)
def test_a_failed_decoder_stays_failed(framing: ModuleType, bad: bytes) -> None:
    decoder = framing.FrameDecoder(max_frame_size=1000, known_types=b"\x01")
    with pytest.raises(DecodeError) as first:
        decoder.feed(bad)
    for later in (frame(1, b"fine"), b"", bytearray()):
        with pytest.raises(DecodeError, match="decoder failed earlier") as again:
            decoder.feed(later)
        assert type(again.value) is DecodeError
        assert str(first.value) in str(again.value)


def released() -> memoryview:
    view = memoryview(b"\x01\x01x")
    view.release()
    return view


@pytest.mark.parametrize("data", ["text", 5, None, [1, 2], memoryview(b"abcdef")[::2], released()])
def test_feeding_a_non_buffer_is_a_local_error_and_harmless(framing: ModuleType, data: Any) -> None:
    decoder = framing.FrameDecoder()
    head = plain(decoder.feed(SAMPLE_STREAM[:5]))
    with pytest.raises(LocalProtocolError, match="data"):
        decoder.feed(data)
    assert head + plain(decoder.feed(SAMPLE_STREAM[5:])) == SAMPLE


@pytest.mark.parametrize(
    "kwargs",
    [
        {"max_frame_size": -1},
        {"max_frame_size": 1 << 62},
        {"max_frame_size": "10"},
        {"max_frame_size": 1.5},
        {"max_frame_size": True},
        {"known_types": "ab"},
        {"known_types": 3},
    ],
)
def test_decoder_rejects_bad_settings(framing: ModuleType, kwargs: dict[str, Any]) -> None:
    with pytest.raises(LocalProtocolError):
        framing.FrameDecoder(**kwargs)


# --- fuzzing --------------------------------------------------------------------------------------


def outcome(
    module: ModuleType, data: bytes, cuts: list[int], max_size: int, known: bytes | None
) -> dict[str, Any]:
    """Everything observable about decoding `data` fed in pieces: the frames, the decoder's
    state after each feed, and the error class and message if one was raised."""
    decoder = module.FrameDecoder(max_frame_size=max_size, known_types=known)
    seen: dict[str, Any] = {"frames": [], "states": [], "error": None}
    start = 0
    try:
        for cut in [*sorted(cuts), len(data)]:
            seen["frames"] += plain(decoder.feed(data[start:cut]))
            seen["states"].append((decoder.buffered, decoder.frames_decoded, decoder.bytes_decoded))
            start = cut
    except DecodeError as exc:
        seen["error"] = (type(exc), str(exc))
    return seen


split_inputs = st.binary(max_size=400).flatmap(
    lambda data: st.tuples(
        st.just(data),
        st.lists(st.integers(0, len(data)), max_size=8),
        st.sampled_from([0, 1, 64, 300, 1 << 20, MAX_VARINT]),
        st.one_of(st.none(), st.binary(max_size=8)),
    )
)


@given(split_inputs)
@FUZZ
def test_garbage_yields_frames_or_decode_errors_only(framing: ModuleType, case: Any) -> None:
    data, cuts, max_size, known = case
    whole = outcome(framing, data, [], max_size, known)
    split = outcome(framing, data, cuts, max_size, known)
    # The same bytes fail at the same place with the same error however they are cut.
    assert split["error"] == whole["error"]
    if whole["error"] is None:
        assert split["frames"] == whole["frames"]
        assert split["states"][-1] == whole["states"][-1]


@given(split_inputs)
@FUZZ
def test_native_and_reference_agree(native: Any, case: Any) -> None:
    data, cuts, max_size, known = case
    compiled = native("framing")
    assert outcome(compiled, data, cuts, max_size, known) == outcome(
        reference, data, cuts, max_size, known
    )


valid_streams = st.lists(
    st.tuples(st.integers(0, 255), st.binary(max_size=200), st.sampled_from([None, 1, 2, 4, 8])),
    max_size=12,
).flatmap(
    lambda frames: st.tuples(
        st.just(frames),
        st.lists(st.integers(0, sum(len(p) + 9 for _, p, _ in frames)), max_size=10),
    )
)


@given(valid_streams)
@FUZZ
def test_valid_streams_decode_whatever_the_split(framing: ModuleType, case: Any) -> None:
    frames, cuts = case
    encoded = []
    for ftype, payload, size in frames:
        if size is not None and len(payload) >= 1 << (8 * size - 2):
            size = None
        encoded.append(frame(ftype, payload, size))
    stream = b"".join(encoded)
    cuts = [min(c, len(stream)) for c in cuts]
    decoder = framing.FrameDecoder()
    assert feed_split(decoder, stream, cuts) == [(t, p) for t, p, _ in frames]
    assert decoder.buffered == 0
    assert decoder.bytes_decoded == len(stream)


def test_a_fed_bytearray_is_locked_while_its_payloads_live(framing: ModuleType) -> None:
    data = bytearray(SAMPLE_STREAM)
    frames = framing.FrameDecoder().feed(data)
    with pytest.raises(BufferError):
        data.append(0)
    del frames
    gc.collect()
    data.append(0)
    assert data[-1] == 0
