"""The layering of docs/architecture.md, checked on every import in the
package: no module imports a layer above its own."""

import ast
import pathlib

import pytest

PACKAGE = pathlib.Path(__file__).resolve().parent.parent / "kvmharness"
CROSS_CUTTING = {"errors", "units", "patterns", "timing", "peer", "_native", "__init__", "__version__"}
# layer -> the layers it may import (besides itself and the cross-cutting modules)
ALLOWED = {
    "kvm": set(),
    "microvm": {"kvm"},
    "dirtyrate": {"microvm", "kvm"},
    "convergence": {"microvm", "kvm"},
    "migration": {"convergence", "dirtyrate", "microvm", "kvm"},
    "qmp": {"migration", "convergence", "dirtyrate", "microvm"},
    "bench": {"dirtyrate", "microvm", "kvm", "probe"},
    "probe": {"dirtyrate", "microvm", "kvm"},
    "perf": {"microvm", "kvm"},
    "qemu": {"qmp", "migration", "dirtyrate", "microvm", "kvm"},
    "selftest": {"perf", "migration", "dirtyrate", "microvm", "kvm"},
    "watch": {"qemu", "qmp", "migration"},
    "commands": {"qmp", "migration", "convergence", "dirtyrate", "microvm", "kvm", "bench", "probe", "selftest",
                 "perf", "qemu", "watch"},
    "cli": {"commands"},
    "pytest_plugin": {"dirtyrate", "microvm", "qemu"},
}


def _layer(module):
    """kvmharness.a.b -> 'a' (the top-level package or module)."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[0] == "kvmharness" else None


def _imports(path):
    module = "kvmharness." + ".".join(path.relative_to(PACKAGE).with_suffix("").parts)
    package = module.rsplit(".", 1)[0] if path.name != "__init__.py" else module.removesuffix(".__init__")
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            yield from (a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
                names = [f"{target}.{a.name}" for a in node.names] if not node.module else [target]
                yield from names
            else:
                yield node.module


FILES = sorted(p for p in PACKAGE.rglob("*.py"))


@pytest.mark.parametrize("path", FILES, ids=[str(p.relative_to(PACKAGE)) for p in FILES])
def test_imports_respect_the_layers(path):
    own = path.relative_to(PACKAGE).parts[0].removesuffix(".py")
    if own in CROSS_CUTTING:
        allowed = CROSS_CUTTING
    else:
        allowed = ALLOWED[own] | CROSS_CUTTING | {own}
    for target in _imports(path):
        layer = _layer(target or "")
        if layer is not None:
            assert layer in allowed, f"{path.relative_to(PACKAGE)} imports {target} ({own} may not use {layer})"


def _module_name(path):
    parts = path.relative_to(PACKAGE).with_suffix("").parts
    return ".".join(("kvmharness",) + (parts[:-1] if parts[-1] == "__init__" else parts))


MODULES = {_module_name(p): p for p in FILES}


def _module_of(target):
    """kvmharness.kvm.vm.Vm -> kvmharness.kvm.vm: the module an import loads
    (a name imported from a module belongs to the module)."""
    while target and target not in MODULES:
        target = target.rpartition(".")[0]
    return target or None


def _cycle(graph):
    """One import cycle in `graph` (module -> the modules it imports), as a
    list of modules, or None: depth-first search for a back edge."""
    state, stack = {}, []

    def visit(module):
        state[module] = "open"
        stack.append(module)
        for target in sorted(graph[module]):
            if state.get(target) == "open":
                return stack[stack.index(target):] + [target]
            if target not in state and (found := visit(target)):
                return found
        stack.pop()
        state[module] = "done"
        return None

    for module in sorted(graph):
        if module not in state and (found := visit(module)):
            return found
    return None


def test_no_import_cycles():
    """No module imports itself back through others, counting imports made
    inside functions: a lazy import hides a cycle from Python, not from the
    reader (kvm/system.py and kvm/vm.py once imported each other so)."""
    graph = {name: {m for t in _imports(path) if (m := _module_of(t or "")) and m != name}
             for name, path in MODULES.items()}
    cycle = _cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_the_cycle_check_finds_a_cycle():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert _cycle(graph) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set()}) is None
