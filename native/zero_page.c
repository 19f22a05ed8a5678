/*
 * Zero pages: which guest pages hold nothing but zeros.  QEMU's migration
 * sends such a page as a flag without its 4 KiB (RAM_SAVE_FLAG_ZERO), and
 * the dirty-curve predictor of the seed's author counts them; we count
 * them for x-zero-pages and skip their data on the wire.
 *
 * Why C: a page that is not zero is usually told by its first bytes, so the
 * scan costs about one cache miss per page, a few ms per GiB, where numpy
 * would read every byte.
 */
#include <stdint.h>
#include <string.h>

#include "kvmh.h"

static int page_is_zero(const unsigned char *page, uint64_t page_size)
{
    const uint64_t *w = (const uint64_t *)page;
    if (w[0] | w[1] | w[2] | w[3])   /* where our guest's tags are */
        return 0;
    for (uint64_t i = 4; i < page_size / 8; i += 4)
        if (w[i] | w[i + 1] | w[i + 2] | w[i + 3])
            return 0;
    return 1;
}

uint64_t kvmh_zero_pages(const unsigned char *base, const uint64_t *pages, size_t count, uint64_t page_size,
                         uint8_t *is_zero)
{
    uint64_t zero = 0;
    for (size_t i = 0; i < count; i++) {
        int z = page_is_zero(base + pages[i] * page_size, page_size);
        if (is_zero)
            is_zero[i] = (uint8_t)z;
        zero += (uint64_t)z;
    }
    return zero;
}

uint64_t kvmh_count_zero_pages(const unsigned char *base, uint64_t npages, uint64_t page_size)
{
    uint64_t zero = 0;
    for (uint64_t p = 0; p < npages; p++)
        zero += (uint64_t)page_is_zero(base + p * page_size, page_size);
    return zero;
}
