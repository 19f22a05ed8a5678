"""Every parser of what users type, on any text: a value within its bounds,
or our one-line UsageError; never anything else (hypothesis)."""

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
