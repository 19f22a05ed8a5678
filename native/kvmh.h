/* Declarations of the native helper; also fed to cffi's cdef (one per line). */
#ifndef KVMH_H
#define KVMH_H
#include <stddef.h>
#include <stdint.h>

size_t kvmh_guest_image(const unsigned char **image);
size_t kvmh_multiboot_image(const unsigned char **image);
int kvmh_install_kick_handler(int signo);
void kvmh_guest_run_on_host(void *control_block);

/* dirty_ring.c */
struct kvm_dirty_gfn;
uint64_t kvmh_ring_harvest(struct kvm_dirty_gfn *ring, uint32_t entries, uint32_t *fetch_index, uint32_t first_slot, uint32_t nslots, const uint64_t *slot_first_page, uint64_t *bitmap, uint64_t *unique_new, uint64_t *foreign);
uint32_t kvmh_ring_pending(const struct kvm_dirty_gfn *ring, uint32_t entries, uint32_t fetch_index);

/* page_hash.c */
uint64_t kvmh_xxh64(const void *data, size_t len, uint64_t seed);
void kvmh_hash_pages(const unsigned char *base, const uint64_t *pages, size_t count, uint64_t page_size, uint64_t *hashes);

/* zero_page.c */
uint64_t kvmh_zero_pages(const unsigned char *base, const uint64_t *pages, size_t count, uint64_t page_size, uint8_t *is_zero);
uint64_t kvmh_count_zero_pages(const unsigned char *base, uint64_t npages, uint64_t page_size);

/* copy_pages.c */
void kvmh_gather_pages(const unsigned char *base, const uint64_t *pages, size_t count, uint64_t page_size, unsigned char *out, uint64_t *hashes);
void kvmh_scatter_pages(const unsigned char *in, const uint64_t *pages, size_t count, uint64_t page_size, unsigned char *base, uint64_t *hashes);

/* alias.c */
int kvmh_alias_build(const uint64_t *mass, uint32_t n, uint64_t *table);

#endif
