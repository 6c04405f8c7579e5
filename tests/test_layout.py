"""The package's structure: no import cycles, no use of another package's private names, a layout map that
names every module, and library code that never reads a config."""

import ast
import os

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGE = os.path.join(REPO, "stpn_tf")

# The layer order (README, "Layout"): a package imports only packages of earlier layers, never one of its
# own layer or a later one. `configs` is the repository's top-level configs/ folder (stpn_tf.configs).
LAYERS = [("core",), ("configs",), ("artifacts",), ("data",), ("model", "localize"), ("training", "inference"),
          ("evaluation",), ("tuning",), ("extract",), ("workflows", "beam"), ("cli",)]


def _modules() -> dict[str, str]:
    """{dotted module name: file path} of every module of the package, the mapped configs/ included."""
    out = {}
    for folder, prefix in ((PACKAGE, ["stpn_tf"]), (os.path.join(REPO, "configs"), ["stpn_tf", "configs"])):
        for root, _, files in os.walk(folder):
            for name in files:
                if not name.endswith(".py"):
                    continue
                path = os.path.join(root, name)
                parts = prefix + os.path.relpath(path, folder)[:-3].split(os.sep)
                if parts[-1] == "__init__":
                    parts = parts[:-1]
                out[".".join(parts)] = path
    return out


MODULES = _modules()


def _imports(path: str, module: str):
    """(imported stpn_tf module, imported names, line) of every import in a file, lazy ones included."""
    tree = ast.parse(open(path).read(), path)
    package = module if path.endswith("__init__.py") else module.rsplit(".", 1)[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("stpn_tf"):
                    yield alias.name, [], node.lineno
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else []))
            if not base.startswith("stpn_tf"):
                continue
            names = [a.name for a in node.names]
            plain = [n for n in names if f"{base}.{n}" not in MODULES]
            if plain:  # `from package import submodule` imports the submodule, not the package's names
                yield base, plain, node.lineno
            for n in names:
                if f"{base}.{n}" in MODULES:
                    yield f"{base}.{n}", [], node.lineno


def _graph() -> dict[str, set[str]]:
    graph = {}
    for module, path in MODULES.items():
        graph[module] = {target for target, _, _ in _imports(path, module) if target in MODULES and target != module}
    return graph


def test_import_graph_has_no_cycles():
    graph = _graph()
    state: dict[str, int] = {}
    cycles = []

    def visit(node, stack):
        state[node] = 1
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                cycles.append(stack[stack.index(nxt):] + [nxt])
            elif nxt not in state:
                visit(nxt, stack + [nxt])
        state[node] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])
    assert not cycles, "import cycles:\n" + "\n".join(" -> ".join(c) for c in cycles)
    assert len(graph) > 40  # the walk saw the package


def test_packages_import_only_earlier_layers():
    rank = {name: i for i, layer in enumerate(LAYERS) for name in layer}
    packages = {m.split(".")[1] for m in MODULES if m.count(".") >= 1 and m.split(".")[1] != "__main__"}
    packages = {p for p in packages if os.path.isdir(os.path.join(PACKAGE, p)) or p == "configs"}
    assert packages == set(rank), f"packages missing from LAYERS or gone: {packages ^ set(rank)}"
    offences = []
    for module, path in MODULES.items():
        if module.count(".") < 2 and not path.endswith("__init__.py"):
            continue
        own = module.split(".")[1] if module.count(".") >= 1 else None
        for target, _, line in _imports(path, module):
            if own not in rank or target.count(".") < 1:
                continue
            other = target.split(".")[1]
            if other in rank and other != own and rank[other] >= rank[own]:
                offences.append(f"{path}:{line}: {own} (layer {rank[own]}) imports {target} (layer {rank[other]})")
    assert not offences, "\n".join(offences)


def _package_of(module: str) -> str:
    path = MODULES[module]
    return module if path.endswith("__init__.py") else module.rsplit(".", 1)[0]


def test_no_private_names_across_packages():
    offences = []
    for module, path in MODULES.items():
        aliases = {}
        for target, names, line in _imports(path, module):
            if target not in MODULES:
                continue
            for name in names:
                if name.startswith("_") and not name.startswith("__") and _package_of(target) != _package_of(module):
                    offences.append(f"{path}:{line}: from {target} import {name}")
        tree = ast.parse(open(path).read(), path)
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("stpn_tf"):
                for alias in node.names:
                    full = f"{node.module}.{alias.name}"
                    if full in MODULES:
                        aliases[alias.asname or alias.name] = full
            elif isinstance(node, ast.Import):
                for alias in node.names:
                    if alias.name in MODULES and alias.asname:
                        aliases[alias.asname] = alias.name
        for node in ast.walk(tree):
            if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in aliases
                    and node.attr.startswith("_") and not node.attr.startswith("__")
                    and _package_of(aliases[node.value.id]) != _package_of(module)):
                offences.append(f"{path}:{node.lineno}: {node.value.id}.{node.attr}")
    assert not offences, "\n".join(offences)


def test_only_the_cli_reads_configs():
    """Library code takes typed settings; `ml_collections` appears only in the cli and the config files."""
    readers = sorted(m for m, path in MODULES.items() if "ml_collections" in open(path).read())
    assert readers and all(m.startswith(("stpn_tf.cli", "stpn_tf.configs")) for m in readers), readers


@pytest.mark.parametrize("name", sorted({m.split(".")[1] for m in MODULES if m.count(".") >= 1}))
def test_readme_layout_map_names_every_top_level_module(name):
    readme = open(os.path.join(REPO, "README.md")).read()
    layout = readme[readme.index("## Layout"):]
    assert name in layout, f"README's layout map does not mention stpn_tf/{name}"
