"""The command line's layout: each command module declares its own
arguments beside its handler (kvmharness/commands/), cli.py lists the
commands, and only the command being run is imported, so `kvmharness
--help` (or a typo's error) loads no command module, and no command's
arguments load numpy, cffi or the native extension."""

import importlib
import pathlib
import pkgutil
import re
import subprocess
import sys

import pytest

from kvmharness import cli, commands
from kvmharness.pytest_plugin import KVMHARNESS

ROOT = pathlib.Path(__file__).resolve().parent.parent
MODULES = {f"kvmharness.commands.{module}" for _, module, _ in cli.COMMANDS}
# what parsing a command line may load of ours: the cross-cutting parsers
# and the command's own module, not the layers its handler uses
LIGHT = {"kvmharness", "kvmharness.cli", "kvmharness.errors", "kvmharness.units", "kvmharness.patterns",
         "kvmharness.commands", "kvmharness.commands.args"}
HEAVY = ("numpy", "cffi", "asyncio", "kvmharness._native")


def _loaded_by(*args):
    """The modules the console script imports for `kvmharness ARGS`, from
    python -X importtime."""
    out = subprocess.run([sys.executable, "-X", "importtime", KVMHARNESS, *args], capture_output=True, text=True,
                         timeout=60)
    assert "kvmharness.cli" in out.stderr, "no import times read: did -X importtime's format change?"
    return out, {line.rsplit("|", 1)[1].strip() for line in out.stderr.splitlines()
                 if line.startswith("import time:") and "|" in line}


@pytest.mark.parametrize("args, command", [
    (["--help"], None), (["frobnicate"], None), ([], None), (["predict", "--help"], "predict"),
    (["migrate-listen", "--port", "0x"], "migrate_listen"), (["run", "--mem", "lots"], "run")])
def test_parsing_loads_only_the_named_command(args, command):
    out, loaded = _loaded_by(*args)
    assert out.returncode in (0, 2), out.stderr
    ours = {m for m in loaded if m == "kvmharness" or m.startswith("kvmharness.")}
    allowed = LIGHT | ({f"kvmharness.commands.{command}"} if command else set())
    assert ours <= allowed, f"{args} imports {sorted(ours - allowed)}: import them inside the handler"
    assert not [m for m in loaded if m.split(".")[0] in HEAVY or m in HEAVY]


@pytest.mark.parametrize("name", sorted(MODULES))
def test_each_command_module_declares_arguments_beside_its_handler(name):
    module = importlib.import_module(name)
    assert callable(module.add_arguments) and callable(module.main)


def test_every_command_module_is_listed():
    """A module under commands/ that declares arguments is in cli.COMMANDS
    (forgetting it would drop the command silently)."""
    declaring = {f"kvmharness.commands.{m.name}" for m in pkgutil.iter_modules(commands.__path__)
                 if hasattr(importlib.import_module(f"kvmharness.commands.{m.name}"), "add_arguments")}
    assert declaring == MODULES


def test_the_whole_parser_runs_each_modules_handler():
    parser = cli.build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    for name, module, _ in cli.COMMANDS:
        handler = sub.choices[name].get_default("handler")
        assert (handler.__module__, handler.__name__) == (f"kvmharness.commands.{module}", "main")


def test_the_readme_lists_every_command():
    text = (ROOT / "README.md").read_text()
    block = text[text.index("## Commands"):text.index("## How the VM is built")]
    listed = set(re.findall(r"^kvmharness ([a-z-]+)", block, re.M))
    assert listed == {name for name, _, _ in cli.COMMANDS}
