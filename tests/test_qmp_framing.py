"""The QMP framing and argument checks on their own (no KVM)."""

import pytest

from kvmharness.qmp.framing import FramingError, JsonSplitter
from kvmharness.qmp.schema import Arg, QmpError, check_arguments


def test_objects_split_at_boundaries_without_newlines():
    s = JsonSplitter()
    assert s.feed(b'{"a": 1}{"b": "}{"}  [1, 2]') == [b'{"a": 1}', b'{"b": "}{"}', b"[1, 2]"]


def test_a_message_split_across_reads_byte_by_byte():
    s = JsonSplitter()
    text = b'{"execute": "x", "arguments": {"s": "a\\"}b"}}'
    out = []
    for i in range(len(text)):
        out += s.feed(text[i : i + 1])
    assert out == [text]


def test_garbage_is_reported_once_per_run_and_skipped():
    s = JsonSplitter()
    out = s.feed(b'hello world {"ok": true}')
    assert out[:2] == [FramingError("JSON parse error, invalid input outside a JSON object")] * 2
    assert out[2] == b'{"ok": true}'


def test_oversized_and_overdeep_texts_are_fatal():
    big = JsonSplitter(max_size=100)
    out = big.feed(b'{"a": "' + b"x" * 200)
    assert out[-1].fatal and "larger than 100" in out[-1].desc
    deep = JsonSplitter(max_depth=10)
    assert deep.feed(b"[" * 11)[-1].fatal


SCHEMA = (Arg("calc-time", "int", required=True), Arg("mode", "enum", values=("a", "b")),
          Arg("name", "str"))


@pytest.mark.parametrize("args,desc", [
    ({}, "Parameter 'calc-time' is missing"),
    ({"calc-time": "1"}, "Invalid parameter type for 'calc-time', expected: integer"),
    ({"calc-time": 1.5}, "Invalid parameter type for 'calc-time', expected: integer"),
    ({"calc-time": True}, "Invalid parameter type for 'calc-time', expected: integer"),
    ({"calc-time": 2**63}, "Invalid parameter type for 'calc-time', expected: integer"),
    ({"calc-time": 1, "mode": "c"}, "Parameter 'mode' does not accept value 'c'"),
    ({"calc-time": 1, "mode": 3}, "Invalid parameter type for 'mode', expected: string"),
    ({"calc-time": 1, "name": []}, "Invalid parameter type for 'name', expected: string"),
    ({"calc-time": 1, "extra": 0}, "Parameter 'extra' is unexpected"),
])
def test_qapi_style_errors(args, desc):
    with pytest.raises(QmpError) as e:
        check_arguments(SCHEMA, args)
    assert e.value.desc == desc and e.value.qmp_class == "GenericError"


def test_valid_arguments_pass_through():
    assert check_arguments(SCHEMA, {"calc-time": 5, "mode": "a"}) == {"calc-time": 5, "mode": "a"}
