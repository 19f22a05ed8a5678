/*
 * Dirty ring harvesting (KVM_CAP_DIRTY_LOG_RING, Documentation/virt/kvm/api.rst).
 *
 * Why C: each kvm_dirty_gfn is shared with the kernel, which publishes it by
 * setting KVM_DIRTY_GFN_F_DIRTY.  The flags must be read with acquire
 * ordering (so slot/offset are read after the flag says they are valid) and
 * RESET stored with release ordering (so the kernel sees our reads done
 * before it reuses the entry).  Python has no way to express either, and at
 * millions of entries per second an interpreter loop would be too slow.
 */
#include <stdint.h>
#include <linux/kvm.h>

#include "kvmh.h"

/*
 * Each entry names its memslot (bits 0-15; the address space in bits 16-31)
 * and the page's offset in it.  The data region is `nslots` consecutive
 * memslots from `first_slot`; slot_first_page[i] is the region's page at
 * which slot first_slot + i starts, slot_first_page[nslots] its end.  An
 * entry outside them is counted in *foreign: KVM logging a page we never
 * asked it to, or our slot table being wrong, which the caller reports.
 */
uint64_t kvmh_ring_harvest(struct kvm_dirty_gfn *ring, uint32_t entries, uint32_t *fetch_index,
                           uint32_t first_slot, uint32_t nslots, const uint64_t *slot_first_page,
                           uint64_t *bitmap, uint64_t *unique_new, uint64_t *foreign)
{
    uint64_t harvested = 0;
    uint32_t mask = entries - 1;   /* entries is a power of two (KVM requires it) */

    for (;;) {
        struct kvm_dirty_gfn *gfn = &ring[*fetch_index & mask];
        uint32_t flags = __atomic_load_n(&gfn->flags, __ATOMIC_ACQUIRE);
        uint32_t index = gfn->slot - first_slot;   /* wraps for slots below first_slot */

        if (!(flags & KVM_DIRTY_GFN_F_DIRTY))
            break;
        if (index < nslots && gfn->offset < slot_first_page[index + 1] - slot_first_page[index]) {
            if (bitmap) {
                uint64_t page = slot_first_page[index] + gfn->offset;
                uint64_t word = page >> 6, bit = 1ULL << (page & 63);
                if (!(bitmap[word] & bit)) {
                    bitmap[word] |= bit;
                    (*unique_new)++;
                }
            }
        } else {
            (*foreign)++;
        }
        __atomic_store_n(&gfn->flags, KVM_DIRTY_GFN_F_RESET, __ATOMIC_RELEASE);
        (*fetch_index)++;
        harvested++;
    }
    return harvested;
}

/*
 * Entries KVM has published in a ring but nobody has harvested yet, counted
 * without touching them: the dirty limit's rate estimate must not reap the
 * rings, or the vCPUs would never fill them and never take the exit in
 * which the limit makes them sleep (QEMU's dirtylimit.c throttles there).
 */
uint32_t kvmh_ring_pending(const struct kvm_dirty_gfn *ring, uint32_t entries, uint32_t fetch_index)
{
    uint32_t n = 0, mask = entries - 1;

    while (n < entries && (__atomic_load_n(&ring[(fetch_index + n) & mask].flags, __ATOMIC_ACQUIRE)
                           & KVM_DIRTY_GFN_F_DIRTY))
        n++;
    return n;
}
