"""What QEMU offers to make a migration converge when the guest dirties
memory faster than the link carries it: the dirty page rate limit
(dirty_limit.py, QEMU's system/dirtylimit.c) and CPU throttling
(cpu_throttle.py, QEMU's system/cpu-throttle.c, "auto-converge"), and the
rule by which a migration turns either on (trigger.py, QEMU's
migration/ram.c)."""
