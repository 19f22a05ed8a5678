"""QEMU as a target: our writer booted in QEMU with exact ground truth
(guest.py, launch.py), QEMU's own calc-dirty-rate driven over QMP and
checked against replay (dirty_rate.py, check.py), and a QEMU VM's dirty
curve measured from QMP alone for prediction (curve.py)."""
