"""QMP's wire protocol without a VM: the refusals QEMU's monitor makes
before any command runs (framing, negotiation, QAPI's argument checks, its
error classes and texts), through the server's own Session, byte for byte.
The refusals that need a VM are in test_qmp.py."""

import asyncio
import json

import pytest

from kvmharness.qmp.server import Session

PROTOCOL_ERRORS = [
    ({"execute": "calc-dirty-rate", "arguments": {}}, "GenericError", "Parameter 'calc-time' is missing"),
    ({"execute": "calc-dirty-rate", "arguments": {"calc-time": "1"}}, "GenericError",
     "Invalid parameter type for 'calc-time', expected: integer"),
    ({"execute": "calc-dirty-rate", "arguments": {"calc-time": 1, "mode": "foo"}}, "GenericError",
     "Parameter 'mode' does not accept value 'foo'"),
    ({"execute": "calc-dirty-rate", "arguments": {"calc-time": 1, "x": 1}}, "GenericError",
     "Parameter 'x' is unexpected"),
    ({"execute": "query-dirty-rate", "arguments": {"calc-time-unit": "hour"}}, "GenericError",
     "Parameter 'calc-time-unit' does not accept value 'hour'"),
    ({"execute": "foo"}, "CommandNotFound", "The command foo has not been found"),
    ({"execute": "qmp_capabilities"}, "CommandNotFound",
     "Capabilities negotiation is already complete, command ignored"),
    ({"execute": 3}, "GenericError", "QMP input member 'execute' must be a string"),
    ({"arguments": {}}, "GenericError", "QMP input lacks member 'execute'"),
    ({"execute": "query-version", "arguments": []}, "GenericError",
     "QMP input member 'arguments' must be an object"),
    ({"execute": "query-version", "bogus": 1}, "GenericError", "QMP input member 'bogus' is unexpected"),
    ({"execute": "x-set-writer", "arguments": {"pattern": "zigzag"}}, "GenericError",
     "invalid pattern 'zigzag': use random, sequential, hotcold:H:P (e.g. hotcold:0.1:0.9) or zipf:S (e.g. zipf:1.0)"),
    ({"execute": "x-set-writer", "arguments": {"pattern": "zipf:0"}}, "GenericError",
     "the Zipf exponent S of zipf:S must lie in (0, 10]"),
    ({"execute": "x-set-writer", "arguments": {"write-percent": 101}}, "GenericError",
     "Parameter 'write-percent' must be between 0 and 100"),
    ({"execute": "x-set-writer", "arguments": {"write-percent": True}}, "GenericError",
     "Invalid parameter type for 'write-percent', expected: number"),
    ({"execute": "x-set-writer", "arguments": {"burst": "1s"}}, "GenericError",
     "invalid burst '1s': use ON/OFF, e.g. 200ms/800ms, or none"),
]


class _Wire:
    """The transport end Session writes to: what went out, line by line."""

    def __init__(self):
        self.out = b""

    def is_closing(self):
        return False

    def write(self, data):
        self.out += data

    def replies(self):
        assert self.out.endswith(b"\r\n")  # QEMU ends every reply in CRLF
        return [json.loads(line) for line in self.out.split(b"\r\n")[:-1]]


def _session(negotiated=True):
    wire = _Wire()
    session = Session(server=None, writer=wire)  # no server: nothing may reach a command
    session.negotiated = negotiated
    return session, wire


def _exchange(session, wire, *texts):
    async def feed():
        for text in texts:
            for frame in session.splitter.feed(text):
                await session.handle(frame)
    asyncio.run(feed())
    return wire.replies()


@pytest.mark.parametrize("request_,cls,desc", PROTOCOL_ERRORS, ids=[e[2][:40] for e in PROTOCOL_ERRORS])
def test_protocol_error_replies(request_, cls, desc):
    session, wire = _session()
    sent = json.dumps(dict(request_, id={"n": [1, "two"]})).encode()
    assert _exchange(session, wire, sent) == [{"error": {"class": cls, "desc": desc}, "id": {"n": [1, "two"]}}]


def test_negotiation_comes_first():
    session, wire = _session(negotiated=False)
    replies = _exchange(session, wire, b'{"execute": "query-version", "id": "a"}',
                        b'{"execute": "qmp_capabilities", "arguments": {"enable": ["oob"]}}',
                        b'{"execute": "qmp_capabilities", "id": 7}')
    assert replies == [
        {"error": {"class": "CommandNotFound",
                   "desc": "Expecting capabilities negotiation with 'qmp_capabilities'"}, "id": "a"},
        {"error": {"class": "GenericError", "desc": "Capability 'oob' not available"}},
        {"return": {}, "id": 7},
    ]


def test_malformed_input_is_answered_not_fatal():
    session, wire = _session()
    replies = _exchange(session, wire, b'{"execute": oops}', b"[1, 2]", b'{"execute": "foo", "id": 1}')
    assert replies[0]["error"]["desc"].startswith("JSON parse error")
    assert replies[1] == {"error": {"class": "GenericError", "desc": "QMP input must be a JSON object"}}
    assert replies[2]["id"] == 1 and replies[2]["error"]["class"] == "CommandNotFound"
