"""Our tests use kvmharness's own pytest plugin (kvmharness/pytest_plugin.py,
registered as a pytest11 entry point by the install): the kvm and root
markers, --require-kvm (a skip is a failure, also under CI=true), and the
helpers.  The one setting here: tests/plugin_project is another project,
run in its own pytest process by tests/test_plugin_project.py, not collected
as ours."""

collect_ignore = ["plugin_project"]
