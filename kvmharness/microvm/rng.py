"""The writer's counter-based generator, vectorized: SplitMix64 (Steele, Lea,
Flood: "Fast splittable pseudorandom number generators", OOPSLA 2014) and
the guest's multiply-high, bit for bit as guest/writer.S computes them."""

import numpy as np

from .guest import GOLDEN, MIX1, MIX2

_U64 = np.uint64
_LOW32 = _U64(0xFFFFFFFF)


def mix(z):
    """SplitMix64's output function, elementwise and in place on uint64 `z`."""
    tmp = np.empty_like(z)
    for shift, m in ((30, MIX1), (27, MIX2)):
        np.right_shift(z, _U64(shift), out=tmp)
        z ^= tmp
        z *= _U64(m)
    np.right_shift(z, _U64(31), out=tmp)
    z ^= tmp
    return z


def states(index, seed):
    """The writer's PRNG state before access `index`: seed + (index + 1) *
    GOLDEN.  Consumes `index` (a uint64 array)."""
    index += _U64(1)
    index *= _U64(GOLDEN)
    index += _U64(seed)
    return index


def splitmix64(index, seed):
    """SplitMix64 output for state seed + (index + 1) * GOLDEN, elementwise.

    Consumes `index` (a uint64 array): computed in place, since replay speed
    is bounded by memory traffic, not arithmetic.
    """
    return mix(states(index, seed))


def mulhi(z, n):
    """floor(z * n / 2^64) for uint64 z and n < 2^32: the writer's `mul`.
    Exact: z * n = hi(z) * n * 2^32 + lo(z) * n, and neither product
    overflows 64 bits when n < 2^32.  Consumes `z`."""
    n = _U64(n)
    low = np.bitwise_and(z, _LOW32)
    low *= n
    low >>= _U64(32)
    z >>= _U64(32)
    z *= n
    z += low
    z >>= _U64(32)
    return z


