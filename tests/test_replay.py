"""Replay against a plain-Python reference of the generator the guest runs."""

import numpy as np
import pytest

from kvmharness.microvm import guest, replay

M64 = (1 << 64) - 1


def reference_page(seed, npages, i):
    z = (seed + (i + 1) * guest.GOLDEN) & M64
    z = ((z ^ (z >> 30)) * guest.MIX1) & M64
    z = ((z ^ (z >> 27)) * guest.MIX2) & M64
    z ^= z >> 31
    return (z * npages) >> 64


@pytest.mark.parametrize("npages", [1, 3, 16384, 262143, 1000003, (1 << 32) - 1])
def test_random_pages_match_reference(npages):
    stream = replay.WriterStream(seed=0xDEADBEEF, first_page=5, npages=npages)
    got = stream.pages(10**9, 10**9 + 500)
    want = [5 + reference_page(0xDEADBEEF, npages, i) for i in range(10**9, 10**9 + 500)]
    assert got.tolist() == want


def test_sequential_wraps():
    stream = replay.WriterStream(seed=1, first_page=100, npages=7, pattern="sequential")
    assert stream.pages(5, 12).tolist() == [105, 106, 100, 101, 102, 103, 104]


def test_random_is_uniform_enough():
    stream = replay.WriterStream(seed=3, first_page=0, npages=10)
    counts = np.bincount(stream.pages(0, 100_000).astype(np.int64), minlength=10)
    assert counts.min() > 9_500 and counts.max() < 10_500


def test_log_segments_replay_each_part_with_its_stream():
    a = replay.WriterStream(seed=1, first_page=0, npages=50)
    b = replay.WriterStream(seed=1, first_page=0, npages=50, pattern="sequential")
    log = replay.WriterLog(((0, a),)).then(1000, b)
    tags = replay.last_tags(log, 50, 0, 1010)
    # the last 10 writes were sequential from 1000 % 50 = 0: pages 0..9
    assert tags[:10].tolist() == list(range(1001, 1011))
    assert replay.unique_pages(log, 50, 1000, 1010) == 10


def test_last_tags_keeps_the_last_write():
    stream = replay.WriterStream(seed=9, first_page=0, npages=4)
    pages = stream.pages(0, 64).tolist()
    tags = replay.last_tags(stream, 4, 0, 64)
    for page in range(4):
        hits = [i for i, p in enumerate(pages) if p == page]
        assert tags[page] == (hits[-1] + 1 if hits else 0)


def test_appending_out_of_order_is_refused():
    s = replay.WriterStream(seed=1, first_page=0, npages=8)
    with pytest.raises(ValueError):
        replay.WriterLog(((100, s),)).then(50, s)
