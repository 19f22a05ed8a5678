/*
 * Alias tables for the guest writer's table pattern (guest/layout.h): Vose's
 * O(n) construction (M. D. Vose, "A linear algorithm for generating random
 * numbers with a given distribution", IEEE TSE 17(9), 1991) of Walker's
 * alias method, in exact integer arithmetic.
 *
 * Each column holds 2^32 units of probability mass.  The caller gives the
 * mass of every page as integers summing to n * 2^32; the table then picks
 * page j with probability exactly mass[j] / (n * 2^32), which is what replay
 * and the theory use.  In C because the construction is a sequential loop
 * over up to millions of pages.
 */
#include <stdlib.h>
#include "kvmh.h"
#include "layout.h"

#define COLUMN (1ULL << 32)

int kvmh_alias_build(const uint64_t *mass, uint32_t n, uint64_t *table)
{
    uint32_t *small = malloc(sizeof(uint32_t) * (size_t)n);
    uint32_t *large = malloc(sizeof(uint32_t) * (size_t)n);
    uint64_t *left = malloc(sizeof(uint64_t) * (size_t)n);
    uint32_t ns = 0, nl = 0;
    if (!small || !large || !left) {
        free(small);
        free(large);
        free(left);
        return -1;
    }
    for (uint32_t j = 0; j < n; j++) {
        left[j] = mass[j];
        if (mass[j] < COLUMN)
            small[ns++] = j;
        else
            large[nl++] = j;
    }
    while (ns && nl) {
        uint32_t s = small[--ns], l = large[nl - 1];
        /* column s: its own mass, the rest of the column from l */
        table[s] = left[s] | ((uint64_t)l << KVMH_ALIAS_SHIFT);
        left[l] -= COLUMN - left[s];
        if (left[l] < COLUMN) {
            nl--;
            small[ns++] = l;
        }
    }
    /* what is left holds exactly one column of mass each (the sums are
     * exact): the column keeps it all, its alias is itself */
    while (nl) {
        uint32_t l = large[--nl];
        table[l] = (COLUMN - 1) | ((uint64_t)l << KVMH_ALIAS_SHIFT);
    }
    while (ns) {
        uint32_t s = small[--ns];
        table[s] = (COLUMN - 1) | ((uint64_t)s << KVMH_ALIAS_SHIFT);
    }
    free(small);
    free(large);
    free(left);
    return 0;
}
