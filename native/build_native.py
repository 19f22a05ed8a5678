"""cffi API-mode build of kvmharness._native (run by setup.py's cffi_modules).

The guest (guest/writer.S) is assembled here with the system gcc and linked
into the extension, so that `pip install .` builds everything in one step and
an installed package can never carry a guest image older than its code.
Constants of guest/layout.h are exported to Python by name, so host and
guest share one definition of the memory layout and the control block.
"""

import atexit
import os
import re
import shutil
import subprocess
import tempfile

from cffi import FFI

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NATIVE = os.path.join(ROOT, "native")
GUEST = os.path.join(ROOT, "guest")


def _layout_constants():
    with open(os.path.join(GUEST, "layout.h")) as f:
        names = re.findall(r"^#define\s+(KVMH_[A-Z0-9_]+)\s+\S", f.read(), re.M)
    return [n for n in names if n != "KVMH_LAYOUT_H"]


def _assemble_guest():
    """The guest objects the extension links: writer.S, and the multiboot image."""
    out_dir = tempfile.mkdtemp(prefix="kvmh-guest-")
    # removed when the build process ends (the extension links these objects after we return):
    # every install left one of these folders behind
    atexit.register(shutil.rmtree, out_dir, True)
    obj = os.path.join(out_dir, "writer.o")
    subprocess.check_call(
        ["gcc", "-c", "-I", GUEST, os.path.join(GUEST, "writer.S"), "-o", obj]
    )
    return [obj, _link_multiboot_image(out_dir)]


def _link_multiboot_image(out_dir):
    """guest/multiboot.S (boot stub + writer.S) linked at KVMH_MB_LOAD_GPA
    as ELF64, then rewritten as ELF32: QEMU's multiboot loader takes only
    32-bit ELF files (qemu-target-notes).  The file is embedded in the
    extension by .incbin, so the image QEMU boots always matches this build."""
    obj = os.path.join(out_dir, "multiboot.o")
    elf64 = os.path.join(out_dir, "multiboot64.elf")
    elf32 = os.path.join(out_dir, "multiboot.elf")
    subprocess.check_call(["gcc", "-c", "-I", GUEST, os.path.join(GUEST, "multiboot.S"), "-o", obj])
    with open(os.path.join(GUEST, "layout.h")) as f:
        load = re.search(r"^#define\s+KVMH_MB_LOAD_GPA\s+(\S+)", f.read(), re.M).group(1)
    subprocess.check_call(["ld", "-m", "elf_x86_64", "-N", "-e", "kvmh_mb_start",
                           f"-Ttext={load}", "-o", elf64, obj])
    subprocess.check_call(["objcopy", "-O", "elf32-i386", elf64, elf32])
    wrapper = os.path.join(out_dir, "multiboot_blob.S")
    with open(wrapper, "w") as f:
        f.write(f'''        .section .rodata
        .globl kvmh_multiboot_start, kvmh_multiboot_end
        .p2align 4
kvmh_multiboot_start:
        .incbin "{elf32}"
kvmh_multiboot_end:
        .section .note.GNU-stack,"",@progbits
''')
    blob = os.path.join(out_dir, "multiboot_blob.o")
    subprocess.check_call(["gcc", "-c", wrapper, "-o", blob])
    return blob


def _cdef():
    with open(os.path.join(NATIVE, "kvmh.h")) as f:
        header = f.read()
    decls = re.findall(r"^[a-z].*\);$", header, re.M)
    consts = [f"#define {name} ..." for name in _layout_constants()]
    # The kernel's struct, declared in full so the compiler checks our view of it.
    gfn = "struct kvm_dirty_gfn { uint32_t flags; uint32_t slot; uint64_t offset; };"
    return "\n".join([gfn] + decls + consts)


ffi = FFI()
ffi.cdef(_cdef())
ffi.set_source(
    "kvmharness._native",
    '#include <linux/kvm.h>\n#include "kvmh.h"\n#include "layout.h"\n',
    sources=[os.path.relpath(os.path.join(NATIVE, c), ROOT)
             for c in ("kvmh.c", "dirty_ring.c", "page_hash.c", "alias.c", "zero_page.c", "copy_pages.c")],
    include_dirs=[NATIVE, GUEST],
    extra_objects=_assemble_guest(),
    extra_compile_args=["-O2", "-Wall", "-Wextra", "-std=gnu11"],
)

if __name__ == "__main__":
    ffi.compile(verbose=True)
