"""How an exact measurement (dirty-bitmap, dirty-ring) stops dirty logging,
and why that decides what the measurement costs the guest after its window.

A window needs every page write-protected at its start (KVM_CLEAR_DIRTY_LOG
of the whole slot: with KVM_DIRTY_LOG_INITIALLY_SET, enabling the log
protects nothing, "Initially-all-set does not require write protecting any
page, because they're all assumed to be dirty", arch/x86/kvm/x86.c
kvm_mmu_slot_apply_flags; the ring's log start protects everything,
kvm_mmu_slot_remove_write_access).  The pages the guest writes in the
window fault once and are writable again; all the others are still
write-protected when the window ends.  What happens to them then:

  clear-flag     QEMU's log stop (kvm_slot_update_flags): KVM_SET_USER_MEMORY_REGION
                 without KVM_MEM_LOG_DIRTY_PAGES.  For this change KVM only
                 recovers huge pages (kvm_mmu_slot_apply_flags ->
                 kvm_mmu_recover_huge_pages, formerly
                 kvm_mmu_zap_collapsible_sptes): 4 KiB SPTEs that cannot be
                 collapsed, which is every one of a 4 KiB-backed slot, stay
                 write-protected.  Each page then costs the guest one write
                 fault, fixed one SPTE at a time (mmu.c fast_page_fault:
                 "only SPTEs that were write-protected for dirty-logging or
                 access tracking are handled here").  Under shadow paging a
                 fault is an exit of microseconds to tens of microseconds,
                 so a 1 GiB guest writing at random needs seconds to fault
                 its 262144 pages back.  A huge-page backed slot (THP,
                 hugetlb) is zapped by that same recovery and faults back in
                 2 MiB at a time.
  recreate-slot  delete the data memslots and add them again without the
                 flag: KVM zaps every SPTE mapping them
                 (kvm_arch_flush_shadow_memslot -> kvm_mmu_zap_all_fast), so
                 pages fault back as missing instead of write-protected, and
                 a missing-page fault under shadow paging maps its
                 neighbours too (mmu.c __direct_pte_prefetch: up to
                 PTE_PREFETCH_NUM = 8 not-present SPTEs per fault; it does
                 not prefetch writable pages into a slot that logs,
                 direct_pte_prefetch_many -> gfn_to_memslot_dirty_bitmap, so
                 it only helps once logging is off).  Costs a stop of every
                 vCPU for the re-add (milliseconds per GiB).

Why clear-flag stays the default: a page left unmapped is dirty to the next
log the moment the guest so much as reads it.  KVM maps a page writable on
a read fault too (where the guest's own PTE is writable and dirty, as ours
are), and makes every writable SPTE it creates in a logged slot dirty
(spte.c make_spte: "if ((spte & PT_WRITABLE_MASK) &&
kvm_slot_dirty_track_enabled(slot)) mark_page_dirty_in_slot").  So after a
recreate-slot stop, an exact window that starts before the guest has
touched every page again counts the pages it only reads (a reader at 30 %
writes: 4843 pages counted against 3504 written, tests/test_workloads.py);
after a clear-flag stop the pages stay mapped and only writes fault.  The
same holds for a huge-page backed slot under clear-flag, whose 4 KiB SPTEs
KVM's own huge-page recovery zaps.  recreate-slot is for the guest that
must be back at its pace soon and whose next window comes later (or
writes what it reads); how much sooner: docs/results/measuring-cost.

With two-dimensional paging and Intel's PML the log clears dirty bits
instead of protecting (kvm_mmu_clear_dirty_pt_masked), so clear-flag leaves
nothing to fault there, and a zap only adds faults (the TDP MMU does not
prefetch).

Nothing shorter is on offer: KVM has no ioctl that makes write-protected
SPTEs writable again, and KVM_PRE_FAULT_MEMORY, which would map pages ahead
of the guest, exists only with two-dimensional paging (x86.c
kvm_vm_ioctl_check_extension: KVM_CAP_PRE_FAULT_MEMORY is tdp_enabled).
"""

from ..errors import DirtyRateError

CLEAR_FLAG, RECREATE_SLOT = "clear-flag", "recreate-slot"
NAMES = (CLEAR_FLAG, RECREATE_SLOT)
QEMU = CLEAR_FLAG  # what QEMU's log stop does
DEFAULT = CLEAR_FLAG  # exact for the next window too (above)


def resolve(name):
    """A log stop as asked (None: the default), checked."""
    name = DEFAULT if name is None else name
    if name not in NAMES:
        raise DirtyRateError(f"Parameter 'x-log-stop' does not accept value '{name}'")
    return name
