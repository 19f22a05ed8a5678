"""Packaging: the sdist carries what it needs to build on a clean machine
(native/ and guest/, compiled by setup.py's cffi_modules), and a fresh
virtual environment that pip-installs it runs `kvmharness probe`.

The install is the slowest test here (~25 s with a warm pip cache: pip
builds the extension and fetches the dependencies through its cache), so it
builds the sdist once per module."""

import json
import os
import subprocess
import sys
import tarfile

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _tracked(folder):
    out = subprocess.run(["git", "ls-files", folder], cwd=ROOT, capture_output=True, text=True)
    if out.returncode:
        pytest.skip("not a git checkout: cannot list the tracked sources")
    return set(out.stdout.split())


@pytest.fixture(scope="module")
def sdist(tmp_path_factory):
    out = tmp_path_factory.mktemp("dist")
    build = subprocess.run([sys.executable, "-m", "build", "--sdist", "--outdir", str(out), ROOT],
                           capture_output=True, text=True, timeout=300)
    assert build.returncode == 0, build.stdout[-2000:] + build.stderr[-2000:]
    (path,) = out.glob("kvmharness-*.tar.gz")
    return path


def test_sdist_carries_native_and_guest(sdist):
    with tarfile.open(sdist) as tar:
        names = {n.split("/", 1)[1] for n in tar.getnames() if "/" in n}
    needed = _tracked("native") | _tracked("guest") | {"setup.py", "pyproject.toml"}
    assert "native/build_native.py" in needed and "guest/writer.S" in needed
    assert needed <= names, sorted(needed - names)
    assert not any(n.endswith((".so", ".o")) for n in names)  # sources only: the install builds them


@pytest.mark.kvm
def test_fresh_venv_installs_the_sdist_and_probes(sdist, tmp_path):
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    pip = subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet",
                          "--disable-pip-version-check", str(sdist)],
                         capture_output=True, text=True, timeout=600)
    assert pip.returncode == 0, pip.stdout[-3000:] + pip.stderr[-3000:]
    # the venv's own copy, not this checkout's editable install
    where = subprocess.run([str(venv / "bin" / "python"), "-c", "import kvmharness; print(kvmharness.__file__)"],
                           capture_output=True, text=True, cwd=tmp_path, check=True)
    assert where.stdout.startswith(str(venv)), where.stdout
    probe = subprocess.run([str(venv / "bin" / "kvmharness"), "probe", "--json"],
                           capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert probe.returncode == 0, probe.stderr
    report = json.loads(probe.stdout)
    assert report["host-kind"] in ("vmx", "svm", "nested")
    assert report["calibration"]["loop-writes-per-second"] > 0
