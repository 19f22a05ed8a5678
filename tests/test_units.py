import pytest

from kvmharness import units
from kvmharness.errors import UsageError


@pytest.mark.parametrize("text,expected", [
    ("512MiB", 512 << 20), ("1GiB", 1 << 30), ("4G", 4 << 30), ("64M", 64 << 20),
    ("4096", 4096), ("1.5GiB", 3 << 29), ("2 gb", 2 << 30),
])
def test_sizes(text, expected):
    assert units.parse_size(text) == expected


@pytest.mark.parametrize("text,expected", [
    ("500ms", 0.5), ("2s", 2.0), ("1.5s", 1.5), ("100us", 1e-4), ("3", 3.0),
])
def test_durations(text, expected):
    assert units.parse_duration(text) == pytest.approx(expected)


@pytest.mark.parametrize("text,expected", [
    ("3M", 3_000_000), ("250k", 250_000), ("0", 0), ("1.5M", 1_500_000), ("10G", 10**10),
])
def test_rates(text, expected):
    assert units.parse_rate(text) == expected


@pytest.mark.parametrize("parser,text", [
    (units.parse_size, "lots"), (units.parse_size, "1XB"), (units.parse_size, "-1G"),
    (units.parse_size, "0.3"), (units.parse_duration, "soon"), (units.parse_duration, "5 parsecs"),
    (units.parse_rate, "fast"), (units.parse_rate, "1.5"), (units.parse_rate, "3Mi"),
])
def test_malformed(parser, text):
    with pytest.raises(UsageError, match="invalid (size|duration|rate)"):
        parser(text)


@pytest.mark.parametrize("text,bits", [
    ("1Gbit/s", 1e9), ("100Mbit", 1e8), ("10gbps", 1e10), ("125MB/s", 1e9), ("1GiB/s", 8 * 2**30),
    ("2.5Gbit/s", 2.5e9), ("64kbit/s", 64e3), ("1Gib/s", 2**30), ("8000 b/s", 8000),
])
def test_bandwidths(text, bits):
    assert units.parse_bandwidth(text) == bits


@pytest.mark.parametrize("text", ["fast", "0Mbit/s", "1Gbyte", "10 Mb/h", "-1Gbit/s"])
def test_malformed_bandwidths(text):
    with pytest.raises(UsageError, match="invalid bandwidth"):
        units.parse_bandwidth(text)
