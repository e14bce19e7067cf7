"""The source tree's layout: one concept per folder, every import arrow pointing down.

Concepts, lowest first (a module may import its own concept and the ones below it, never one above):

    model (+ the package root, which only re-exports it), errors (how a command fails, importing nothing of ours)
        < checkpoint < data < training < {train, hub, evaluation, demo, cli}

Imports are read with `ast` from every file under `src/`, inside functions too (a lazy import is still an arrow).
"""

import ast
from pathlib import Path

import pytest

from towervision_hf.hub.remote_code import REMOTE_CODE_MODULES


SRC = Path(__file__).resolve().parents[1] / "src"
PACKAGE = "towervision_hf"
RANKS = {"model": 0, "errors": 0, "checkpoint": 1, "data": 2, "training": 3}
TOP = ("train", "hub", "evaluation", "demo", "cli", "__main__")
TOP_RANK = 4
TORCH_DTYPES = {"float64", "float32", "float16", "bfloat16", "int64", "int32", "int16", "int8", "uint8", "bool"}
SAFETENSORS_DTYPE_CODES = {"F64", "F32", "F16", "BF16", "I64", "I32", "I16", "I8", "U8", "BOOL"}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(path): path for path in sorted(SRC.rglob("*.py"))}


def concept(module: str) -> str:
    """The concept of a module: its first folder (or file) under the package; the root belongs to `model`."""
    parts = module.split(".")
    if parts[0] != PACKAGE:
        return "cli"  # the top-level `towervision_cli` dispatcher
    return "model" if len(parts) == 1 else parts[1]


def rank(module: str) -> int:
    name = concept(module)
    assert name in RANKS or name in TOP, f"{module}: concept {name!r} has no place in the order of this test"
    return RANKS.get(name, TOP_RANK)


def resolve(module: str, target: str) -> str | None:
    """The module of ours that `target` (dotted, absolute) names, falling back to its package; None if not ours."""
    while target and target not in MODULES:
        target = target.rpartition(".")[0]
    return target or None


def imports(module: str) -> set[str]:
    """Our modules that `module` imports, anywhere in the file."""
    path = MODULES[module]
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            targets = [f"{base}.{alias.name}" for alias in node.names] + [base]
        else:
            continue
        found |= {resolved for target in targets if (resolved := resolve(module, target)) not in (None, module)}
    return found


GRAPH = {module: imports(module) for module in MODULES}


def test_every_source_module_has_a_place_in_the_order():
    assert {concept(module) for module in MODULES} <= set(RANKS) | set(TOP)


def test_model_folder_is_exactly_the_remote_code():
    model_dir = SRC / PACKAGE / "model"
    assert sorted(path.name for path in model_dir.iterdir() if path.name != "__pycache__") == sorted(
        [f"{name}.py" for name in REMOTE_CODE_MODULES] + ["__init__.py"]
    )


def test_model_imports_nothing_of_ours_outside_itself():
    outside = {
        (module, target)
        for module, targets in GRAPH.items()
        if module.startswith(f"{PACKAGE}.model")
        for target in targets
        if not target.startswith(f"{PACKAGE}.model")
    }
    assert not outside


def test_no_arrow_points_up():
    upward = sorted(
        f"{module} -> {target}"
        for module, targets in GRAPH.items()
        for target in targets
        if rank(target) > rank(module)
    )
    assert not upward


def test_import_graph_has_no_circle():
    state = {}  # module -> "open" while on the stack, "done" after

    def visit(module, stack):
        state[module] = "open"
        for target in sorted(GRAPH[module]):
            if state.get(target) == "open":
                pytest.fail("import circle: " + " -> ".join(stack[stack.index(target) :] + [target]))
            if target not in state:
                visit(target, stack + [target])
        state[module] = "done"

    for module in MODULES:
        if module not in state:
            visit(module, [module])


def outside_checkpoint():
    for module, path in MODULES.items():
        if concept(module) != "checkpoint":
            yield module, ast.parse(path.read_text(), str(path))


def is_tensor_name(node) -> bool:
    return isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value.endswith((".weight", ".bias"))


def test_tensor_name_keys_live_in_checkpoint():
    """No string naming a checkpoint tensor outside `checkpoint/`, except the tied-weights declaration that
    transformers reads from the model class itself."""
    found = []
    for module, tree in outside_checkpoint():
        declared = {
            id(constant)
            for node in ast.walk(tree)
            if isinstance(node, ast.Assign) and any(getattr(t, "id", "") == "_tied_weights_keys" for t in node.targets)
            for constant in ast.walk(node.value)
        }
        found += [
            f"{module}:{node.lineno} {node.value}"
            for node in ast.walk(tree)
            if is_tensor_name(node) and id(node) not in declared
        ]
    assert not found


def is_dtype(node) -> bool:
    torch_dtype = (
        isinstance(node, ast.Attribute) and getattr(node.value, "id", "") == "torch" and node.attr in TORCH_DTYPES
    )
    code = isinstance(node, ast.Constant) and node.value in SAFETENSORS_DTYPE_CODES
    return torch_dtype or code


def test_dtype_tables_live_in_checkpoint():
    found = [
        f"{module}:{node.lineno}"
        for module, tree in outside_checkpoint()
        for node in ast.walk(tree)
        if isinstance(node, ast.Dict) and sum(is_dtype(item) for item in node.keys + node.values if item) >= 2
    ]
    assert not found


def test_streamed_writes_live_in_checkpoint():
    """Writing safetensors by hand (a packed header, then tensor bytes) needs `struct`: only `checkpoint/` does."""
    found = [
        module
        for module, tree in outside_checkpoint()
        for node in ast.walk(tree)
        if isinstance(node, (ast.Import, ast.ImportFrom))
        and "struct" in ([alias.name for alias in node.names] if isinstance(node, ast.Import) else [node.module])
    ]
    assert not found


def test_no_test_file_imports_another():
    """Shared builders live in `tests/conftest.py`; test files never import each other."""
    tests = Path(__file__).resolve().parent
    names = {path.stem for path in tests.glob("test_*.py")}
    found = [
        f"{path.name} imports {name}"
        for path in sorted(tests.glob("*.py"))
        for node in ast.walk(ast.parse(path.read_text(), str(path)))
        if isinstance(node, (ast.Import, ast.ImportFrom))
        for name in ([alias.name for alias in node.names] if isinstance(node, ast.Import) else [node.module or ""])
        if name.split(".")[0] in names
    ]
    assert not found
