"""A started, warmed-up MicroVm for the length of a `with`: how the
selftest's checks and the pytest plugin's fixtures get a VM to measure."""

import contextlib

from .machine import MicroVm, VmConfig


@contextlib.contextmanager
def running_vm(**config):
    """A MicroVm built from VmConfig(**config), started and warmed up (the
    writer holds until told to run)."""
    with MicroVm(VmConfig(**config)) as vm:
        vm.start()
        vm.wait_ready()
        yield vm
