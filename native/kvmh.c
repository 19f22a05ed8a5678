/*
 * kvmharness native helper, built by cffi (API mode) during `pip install`.
 *
 * Why native: the guest image is assembled from guest/writer.S and linked in
 * here, so an installed package carries the exact code it was built with;
 * and a vCPU thread is kicked out of KVM_RUN with a signal whose handler must
 * be a plain C no-op installed without SA_RESTART (a Python-level handler
 * would only ever run on the main thread).  The benchmark also runs the very
 * same guest loop in a host process, to compare guest and host speed.
 */
#include <signal.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "kvmh.h"

extern const unsigned char kvmh_guest_entry[];
extern const unsigned char kvmh_guest_end[];
extern const unsigned char kvmh_multiboot_start[];
extern const unsigned char kvmh_multiboot_end[];

size_t kvmh_guest_image(const unsigned char **image)
{
    *image = kvmh_guest_entry;
    return (size_t)(kvmh_guest_end - kvmh_guest_entry);
}

size_t kvmh_multiboot_image(const unsigned char **image)
{
    /* guest/multiboot.S linked as a multiboot ELF32 file (build_native.py):
     * what QEMU boots with -kernel, carried like the guest itself */
    *image = kvmh_multiboot_start;
    return (size_t)(kvmh_multiboot_end - kvmh_multiboot_start);
}

void kvmh_guest_run_on_host(void *control_block)
{
    /* The guest entry takes the control block in %rdi, like a C function's
     * first argument.  It never returns: it clobbers callee-saved registers
     * and loops until the process is killed, so only a throwaway (forked)
     * process may call this. */
    void (*entry)(void *) = (void (*)(void *))(uintptr_t)kvmh_guest_entry;
    entry(control_block);
    __builtin_unreachable();
}

static void kvmh_kick_noop(int signo)
{
    (void)signo;
}

int kvmh_install_kick_handler(int signo)
{
    struct sigaction sa;

    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = kvmh_kick_noop;
    sigemptyset(&sa.sa_mask);
    sa.sa_flags = 0;            /* no SA_RESTART: KVM_RUN must see EINTR */
    return sigaction(signo, &sa, NULL);
}
