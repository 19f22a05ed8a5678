"""The pytest plugin as another project uses it: tests/plugin_project has
its own pytest.ini and tests that use only the plugin's fixtures and
markers; it runs here in its own pytest process, with --require-kvm so that
a test that skipped instead of measuring fails the run."""

import os
import subprocess
import sys

import pytest

PROJECT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "plugin_project")


@pytest.mark.kvm
def test_plugin_project_passes_using_only_the_plugin():
    run = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--require-kvm",
                          "-W", "error::pytest.PytestUnknownMarkWarning", PROJECT],
                         cwd=PROJECT, capture_output=True, text=True, timeout=300)
    print(run.stdout[-3000:])
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-2000:]
    assert "4 passed" in run.stdout


def test_plugin_is_registered_as_a_pytest11_entry_point():
    from importlib.metadata import entry_points

    (ep,) = [e for e in entry_points(group="pytest11") if e.name == "kvmharness"]
    assert ep.value == "kvmharness.pytest_plugin"
