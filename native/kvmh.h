/* Declarations of the native helper; also fed to cffi's cdef. */
#ifndef KVMH_H
#define KVMH_H
#include <stddef.h>
#include <stdint.h>

size_t kvmh_guest_image(const unsigned char **image);
int kvmh_install_kick_handler(int signo);
void kvmh_guest_run_on_host(void *control_block);

#endif
