"""Every parser of what users type, on any text: a value within its bounds,
or our one-line UsageError; never anything else (hypothesis)."""

import json
import math

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kvmharness import units
from kvmharness.errors import UsageError

# Text that looks like what people type, and anything at all.
NUMBERISH = st.from_regex(r"\A\s?[0-9０-９٠-٩.eE+\-]{0,30}\s?[a-zA-Z/²]{0,6}\s?\Z", fullmatch=True)
ANY = st.one_of(NUMBERISH, st.text(max_size=60), st.text(alphabet="0123456789", min_size=20, max_size=500))

PARSERS = {
    "size": (units.parse_size, lambda v: isinstance(v, int) and 0 <= v <= units.MAX_SIZE),
    "duration": (units.parse_duration,
                 lambda v: isinstance(v, float) and math.isfinite(v) and (v == 0 or 1e-6 <= v <= units.MAX_DURATION)),
    "rate": (units.parse_rate, lambda v: isinstance(v, int) and 0 <= v <= units.MAX_RATE),
    "bandwidth": (units.parse_bandwidth,
                  lambda v: isinstance(v, float) and math.isfinite(v) and 0 < v <= units.MAX_BANDWIDTH),
    "count": (units.parse_count, lambda v: isinstance(v, int) and 1 <= v <= 1 << 32),
    "port": (units.parse_port, lambda v: isinstance(v, int) and 0 <= v <= 65535),
    "tcp address": (units.parse_tcp_address,
                    lambda v: isinstance(v, tuple) and isinstance(v[0], str) and 0 <= v[1] <= 65535),
}


@pytest.mark.parametrize("name", list(PARSERS))
@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(text=ANY)
def test_parser_gives_a_bounded_value_or_our_error(name, text):
    parse, valid = PARSERS[name]
    try:
        value = parse(text)
    except UsageError as e:
        message = str(e)
        assert "\n" not in message and len(message) < 200
        return
    assert valid(value), (text, value)


@given(st.integers(min_value=0, max_value=1000), st.sampled_from(["", "k", "M", "G"]))
def test_rates_read_back_exactly(n, unit):
    assert units.parse_rate(f"{n}{unit}") == n * {"": 1, "k": 10**3, "M": 10**6, "G": 10**9}[unit]


@given(st.integers(min_value=0, max_value=1 << 40))
def test_sizes_read_back_exactly(n):
    assert units.parse_size(str(n)) == n and units.parse_size(f"{n}KiB") == n << 10 or n << 10 > units.MAX_SIZE


# ---- what a peer sends: the migration handshake and the QMP client (issue 25) ----------------------------

JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4),
    max_leaves=16)
HANDSHAKE_KEYS = st.fixed_dictionaries({}, optional={
    "kvmharness-migration": JSON_VALUES, "auth": st.sampled_from(["hmac-sha256", "none", "ok", "refused"]) | JSON_VALUES,
    "nonce": st.text(alphabet="0123456789abcdefé", max_size=70) | JSON_VALUES, "mac": st.text(max_size=70) | JSON_VALUES,
    "error": JSON_VALUES})
LINES = st.one_of(
    JSON_VALUES.map(lambda v: json.dumps(v).encode()),
    HANDSHAKE_KEYS.map(lambda v: json.dumps(v, ensure_ascii=False).encode()),
    st.binary(max_size=300),
    st.integers(min_value=0, max_value=3000).map(lambda n: b"[" * n + b"]" * n),
    st.integers(min_value=0, max_value=3000).map(lambda n: b'{"a":' * n + b"1" + b"}" * n),
)


def _one_line(e):
    message = str(e)
    assert "\n" not in message and len(message) < 700, message


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(line=LINES, as_source=st.booleans())
def test_any_handshake_line_is_a_bounded_one_line_error(line, as_source):
    """Whatever line a peer sends in the handshake, either end answers
    with our one-line error (or, by luck, a proof it cannot forge fails):
    never RecursionError, TypeError or anything else escaping."""
    import socket

    from kvmharness.errors import HarnessError
    from kvmharness.migration.auth import authenticate_destination, authenticate_source

    secret = b"correct horse battery staple 42"
    a, b = socket.socketpair()
    with a, b:
        if as_source:  # we are the destination; the "source" sent this
            a.sendall(line.replace(b"\n", b" ") + b"\n")
            call = lambda: authenticate_source(b, secret, timeout=2)  # noqa: E731
        else:  # we are the source; a well-formed greeting, then this as the answer
            greeting = {"kvmharness-migration": 1, "auth": "hmac-sha256", "nonce": "00" * 32}
            b.sendall(json.dumps(greeting).encode() + b"\n" + line.replace(b"\n", b" ") + b"\n")
            call = lambda: authenticate_destination(a, secret, timeout=2)  # noqa: E731
        with pytest.raises(HarnessError) as e:
            call()
        _one_line(e.value)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(line=LINES)
def test_any_qmp_line_is_a_message_or_a_bounded_one_line_error(line):
    """The QMP client's reader on any line: a JSON object, or our one-line
    QmpConnectionError naming the peer."""
    import socket

    from kvmharness.peer import Deadline
    from kvmharness.qmp.client import QmpClient, QmpConnectionError

    a, b = socket.socketpair()
    with a, b:
        client = object.__new__(QmpClient)  # the reader alone, on a socket that already greeted
        client._sock, client._pending, client.shown, client.timeout = a, b"", "test-peer", 2.0
        b.sendall(line.replace(b"\n", b" ") + b"\n")
        try:
            message = client._read(Deadline(2))
        except QmpConnectionError as e:
            _one_line(e)
            return
        assert isinstance(message, dict)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(value=JSON_VALUES, field=st.sampled_from(["dirty-rate", "base-memory", "status"]))
def test_any_answer_is_a_checked_value_or_a_bounded_one_line_error(value, field):
    """What predict --qmp and qemu-check take from an answer (qmp/replies.py,
    calc-dirty-rate's rate, the schema's members) on any JSON value."""
    from kvmharness.errors import HarnessError
    from kvmharness.qemu.dirty_rate import _schema_members, measured_rate
    from kvmharness.qmp import replies

    class Peer:
        shown = "test-peer"

    for answer in (value, {field: value}):
        try:
            if field == "dirty-rate":
                rate = measured_rate(Peer, replies.obj(Peer, "query-dirty-rate", answer))
                assert type(rate) is int and 0 <= rate <= replies.MAX_DIRTY_RATE
            elif field == "base-memory":
                size = replies.whole(Peer, "query-memory-size-summary", answer, field, 4096, replies.MAX_RAM)
                assert type(size) is int
            else:
                assert isinstance(replies.status(Peer, "query-status", answer), str)
        except HarnessError as e:
            _one_line(e)
    if isinstance(value, list):
        names, modes = _schema_members(value, "calc-dirty-rate")
        assert names is None or all(isinstance(n, str) for n in names)
        assert all(isinstance(m, str) for m in modes)
