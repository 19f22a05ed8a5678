/*
 * Page hashing for page-sampling mode: XXH64 (seed 1) of each sampled guest
 * page, as QEMU 8.1+ does in migration/dirtyrate.c (which keeps 32 bits of
 * it; we keep all 64).  Implemented from the XXH64 specification
 * (xxHash's doc/xxhash_spec.md); tests check it against the xxhash package.
 *
 * Why C: sampling a 16 GiB slot at 512 pages/GiB reads 32 MiB in random
 * 4 KiB pieces, twice per window, and the window can be as short as 50 ms.
 */
#include <stdint.h>
#include <string.h>

#include "kvmh.h"

#define P1 0x9E3779B185EBCA87ULL
#define P2 0xC2B2AE3D27D4EB4FULL
#define P3 0x165667B19E3779F9ULL
#define P4 0x85EBCA77C2B2AE63ULL
#define P5 0x27D4EB2F165667C5ULL

static inline uint64_t rotl64(uint64_t x, int r)
{
    return (x << r) | (x >> (64 - r));
}

static inline uint64_t lane(const unsigned char *p)
{
    uint64_t v;
    memcpy(&v, p, sizeof(v));      /* x86 is little-endian, as XXH64 reads */
    return v;
}

static inline uint64_t xxh_round(uint64_t acc, uint64_t input)
{
    return rotl64(acc + input * P2, 31) * P1;
}

static inline uint64_t xxh_merge(uint64_t acc, uint64_t v)
{
    return (acc ^ xxh_round(0, v)) * P1 + P4;
}

uint64_t kvmh_xxh64(const void *data, size_t len, uint64_t seed)
{
    const unsigned char *p = data, *end = p + len;
    uint64_t acc;

    if (len >= 32) {
        uint64_t v1 = seed + P1 + P2, v2 = seed + P2, v3 = seed, v4 = seed - P1;
        const unsigned char *limit = end - 32;
        do {
            v1 = xxh_round(v1, lane(p));
            v2 = xxh_round(v2, lane(p + 8));
            v3 = xxh_round(v3, lane(p + 16));
            v4 = xxh_round(v4, lane(p + 24));
            p += 32;
        } while (p <= limit);
        acc = rotl64(v1, 1) + rotl64(v2, 7) + rotl64(v3, 12) + rotl64(v4, 18);
        acc = xxh_merge(acc, v1);
        acc = xxh_merge(acc, v2);
        acc = xxh_merge(acc, v3);
        acc = xxh_merge(acc, v4);
    } else {
        acc = seed + P5;
    }
    acc += (uint64_t)len;
    for (; p + 8 <= end; p += 8)
        acc = rotl64(acc ^ xxh_round(0, lane(p)), 27) * P1 + P4;
    if (p + 4 <= end) {
        uint32_t w;
        memcpy(&w, p, sizeof(w));
        acc = rotl64(acc ^ ((uint64_t)w * P1), 23) * P2 + P3;
        p += 4;
    }
    for (; p < end; p++)
        acc = rotl64(acc ^ (*p * P5), 11) * P1;
    acc ^= acc >> 33;
    acc *= P2;
    acc ^= acc >> 29;
    acc *= P3;
    acc ^= acc >> 32;
    return acc;
}

void kvmh_hash_pages(const unsigned char *base, const uint64_t *pages, size_t count,
                     uint64_t page_size, uint64_t *hashes)
{
    for (size_t i = 0; i < count; i++)
        hashes[i] = kvmh_xxh64(base + pages[i] * page_size, page_size, 1);
}
