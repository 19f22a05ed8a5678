"""Our ctypes mirror of the KVM UAPI against what the C compiler says for
<linux/kvm.h>: every struct size, every field offset, every ioctl number and
constant we use.  Needs gcc and the kernel headers, not /dev/kvm."""

import ctypes
import json
import shutil
import subprocess

import pytest

from kvmharness.kvm import uapi

STRUCTS = {
    "kvm_userspace_memory_region": uapi.kvm_userspace_memory_region,
    "kvm_dirty_log": uapi.kvm_dirty_log,
    "kvm_clear_dirty_log": uapi.kvm_clear_dirty_log,
    "kvm_enable_cap": uapi.kvm_enable_cap,
    "kvm_regs": uapi.kvm_regs,
    "kvm_segment": uapi.kvm_segment,
    "kvm_dtable": uapi.kvm_dtable,
    "kvm_sregs": uapi.kvm_sregs,
    "kvm_cpuid_entry2": uapi.kvm_cpuid_entry2,
    "kvm_cpuid2": uapi.kvm_cpuid2,
    "kvm_dirty_gfn": uapi.kvm_dirty_gfn,
    "kvm_msr_entry": uapi.kvm_msr_entry,
    "kvm_msrs": uapi.kvm_msrs,
}
# kvm_run members we read, as C expressions relative to the struct
RUN_FIELDS = {
    "immediate_exit": ("immediate_exit",),
    "exit_reason": ("exit_reason",),
    "mmio.phys_addr": ("exit", "mmio", "phys_addr"),
    "mmio.data": ("exit", "mmio", "data"),
    "mmio.len": ("exit", "mmio", "len"),
    "mmio.is_write": ("exit", "mmio", "is_write"),
    "io.port": ("exit", "io", "port"),
    "io.count": ("exit", "io", "count"),
    "fail_entry.hardware_entry_failure_reason": ("exit", "fail_entry", "hardware_entry_failure_reason"),
    "fail_entry.cpu": ("exit", "fail_entry", "cpu"),
    "internal.suberror": ("exit", "internal", "suberror"),
    "internal.data": ("exit", "internal", "data"),
    "system_event.type": ("exit", "system_event", "type"),
}
IOCTLS = [n for n in dir(uapi) if n.startswith("KVM_") and n.split("_")[1] in
          ("GET", "SET", "CREATE", "CHECK", "RUN", "ENABLE", "CLEAR", "RESET")
          and isinstance(getattr(uapi, n), int)]
CONSTANTS = [n for n in dir(uapi) if n.startswith(("KVM_CAP_", "KVM_EXIT_", "KVM_MEM_", "KVM_DIRTY_"))
             and isinstance(getattr(uapi, n), int)]


def _offset_of(struct, path):
    offset = 0
    for name in path:
        field = getattr(struct, name)
        offset += field.offset
        struct = dict(struct._fields_)[name]
    return offset


@pytest.fixture(scope="module")
def c_layout(tmp_path_factory):
    if shutil.which("gcc") is None:
        pytest.skip("gcc is not installed")
    lines = ['#include <stdio.h>', '#include <stddef.h>', '#include <linux/kvm.h>',
             'int main(void) {', 'printf("{\\n");']

    def emit(key, expr):
        lines.append(f'printf("\\"{key}\\": %llu,\\n", (unsigned long long)({expr}));')

    for name, struct in STRUCTS.items():
        emit(f"sizeof {name}", f"sizeof(struct {name})")
        for field, _ in struct._fields_:
            emit(f"{name}.{field}", f"offsetof(struct {name}, {field})")
    for key in RUN_FIELDS:
        emit(f"kvm_run.{key}", f"offsetof(struct kvm_run, {key})")
    for name in IOCTLS + CONSTANTS:
        emit(name, name)
    lines += ['printf("\\"end\\": 0}\\n");', "return 0; }"]
    src = tmp_path_factory.mktemp("layout") / "layout.c"
    src.write_text("\n".join(lines))
    exe = src.with_suffix("")
    subprocess.run(["gcc", "-o", str(exe), str(src)], check=True)
    return json.loads(subprocess.run([str(exe)], check=True, capture_output=True, text=True).stdout)


@pytest.mark.parametrize("name", list(STRUCTS))
def test_struct_layout(c_layout, name):
    struct = STRUCTS[name]
    assert ctypes.sizeof(struct) == c_layout[f"sizeof {name}"]
    for field, _ in struct._fields_:
        assert getattr(struct, field).offset == c_layout[f"{name}.{field}"], field


def test_kvm_run_fields(c_layout):
    for key, path in RUN_FIELDS.items():
        assert _offset_of(uapi.kvm_run, path) == c_layout[f"kvm_run.{key}"], key


@pytest.mark.parametrize("name", IOCTLS + CONSTANTS)
def test_numbers(c_layout, name):
    assert getattr(uapi, name) == c_layout[name]


def test_enough_is_checked():
    assert "KVM_RUN" in IOCTLS and "KVM_CLEAR_DIRTY_LOG" in IOCTLS and len(IOCTLS) >= 18
