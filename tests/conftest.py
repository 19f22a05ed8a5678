"""Our tests use kvmharness's own pytest plugin (kvmharness/pytest_plugin.py,
registered as a pytest11 entry point by the install): the kvm and root
markers, --require-kvm (a skip is a failure, also under CI=true), and the
helpers.  Nothing else is configured here."""
