"""The remote-code files a Hub checkpoint carries, and a static audit that they are safe to ship.

A `trust_remote_code` checkpoint runs these files on the user's machine, from one flat folder. The audit reads
them with `ast` (nothing is imported or executed) and rejects anything that would break the flat layout or make
the code unsafe to trust: imports of the `towervision_hf` package, relative imports that are not
`from .sibling import X`, network or pickle modules, and calls to `eval` / `exec` / `compile` / `__import__` /
`torch.load`. The one exception is `fetching_towervision.py`, the processors' URL fetcher: it alone may use the
standard library's HTTP client (`urllib.request`, `urllib.error`, `http.client`), and nothing else from the network
list.
"""

import ast
from dataclasses import dataclass
from pathlib import Path


# The modules that define the Auto classes of a checkpoint; their relative imports pull in the helpers (tiling_).
REMOTE_CODE_MODULES = (
    "configuration_towervision",
    "modeling_towervision",
    "processing_towervision",
    "image_processing_towervision",
    "video_processing_towervision",
    "tiling_towervision",
    "fetching_towervision",
)
FORBIDDEN_MODULES = frozenset(
    {
        # serialisation that executes code on load
        "pickle", "_pickle", "cPickle", "dill", "cloudpickle", "joblib", "marshal", "shelve",
        # network access
        "socket", "ssl", "http", "urllib", "urllib3", "requests", "httpx", "aiohttp", "ftplib", "smtplib",
        "huggingface_hub",
        # spawning processes
        "subprocess", "multiprocessing",
    }
)  # fmt: skip
# The processors fetch image and video URLs through this file only, with the standard library's HTTP client.
NETWORK_MODULE = "fetching_towervision.py"
NETWORK_MODULE_IMPORTS = frozenset({"urllib.request", "urllib.error", "http.client"})
FORBIDDEN_BUILTINS = frozenset({"eval", "exec", "compile", "__import__"})
FORBIDDEN_ATTRIBUTE_CALLS = frozenset({("torch", "load"), ("os", "system"), ("importlib", "import_module")})
FORBIDDEN_FUNCTIONS = frozenset({"urlopen", "hf_hub_download", "snapshot_download"})


def package_dir() -> Path:
    """The folder holding the installed package's flat remote-code files."""
    from ..model import configuration_towervision

    return Path(configuration_towervision.__file__).resolve().parent


@dataclass(frozen=True)
class RemoteCodeProblem:
    path: str
    line: int
    message: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: {self.message}"


def relative_imports(source: str) -> set[str]:
    """Sibling modules imported as `from .module import X`."""
    return {
        node.module
        for node in ast.walk(ast.parse(source))
        if isinstance(node, ast.ImportFrom) and node.level == 1 and node.module
    }


def audit_source(source: str, name: str, siblings: set[str]) -> list[RemoteCodeProblem]:
    """Every reason why `source` (the file `name`) cannot travel as flat remote code next to `siblings`."""
    problems = []
    network_allowed = NETWORK_MODULE_IMPORTS if name == NETWORK_MODULE else frozenset()

    def report(node, message):
        problems.append(RemoteCodeProblem(name, getattr(node, "lineno", 0), message))

    try:
        tree = ast.parse(source, filename=name)
    except SyntaxError as error:
        return [RemoteCodeProblem(name, error.lineno or 0, f"syntax error: {error.msg}")]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                root = alias.name.split(".")[0]
                if root == "towervision_hf":
                    report(node, f"imports the towervision_hf package ({alias.name}); use `from .module import X`")
                elif root in FORBIDDEN_MODULES and alias.name not in network_allowed:
                    report(node, f"imports {alias.name!r} (network, pickle or process access is not allowed)")
        elif isinstance(node, ast.ImportFrom):
            if node.level == 0:
                root = (node.module or "").split(".")[0]
                if root == "towervision_hf":
                    report(
                        node, f"imports from the towervision_hf package ({node.module}); use `from .module import X`"
                    )
                elif root in FORBIDDEN_MODULES and node.module not in network_allowed:
                    report(node, f"imports from {node.module!r} (network, pickle or process access is not allowed)")
            elif node.level > 1 or not node.module:
                dots = "." * node.level
                report(
                    node,
                    f"`from {dots}{node.module or ''} import ...`: only `from .module import X` survives flattening",
                )
            elif "." in node.module:
                report(node, f"`from .{node.module} import ...`: sub-packages do not exist in the flat Hub folder")
            elif node.module not in siblings:
                report(node, f"imports .{node.module}, which is not one of the shipped files {sorted(siblings)}")
        elif isinstance(node, ast.Call):
            function = node.func
            if isinstance(function, ast.Name) and function.id in FORBIDDEN_BUILTINS | FORBIDDEN_FUNCTIONS:
                report(node, f"calls {function.id}()")
            elif isinstance(function, ast.Attribute):
                owner = function.value.id if isinstance(function.value, ast.Name) else None
                if network_allowed and ast.unparse(function) == "urllib.request.urlopen":
                    continue
                if (owner, function.attr) in FORBIDDEN_ATTRIBUTE_CALLS or function.attr in FORBIDDEN_FUNCTIONS:
                    report(node, f"calls {owner + '.' if owner else ''}{function.attr}()")
    return problems


def collect_remote_code_files(directory: Path | None = None) -> list[Path]:
    """`REMOTE_CODE_MODULES` and every sibling they import, from `directory` (default: the installed package).

    Raises `ValueError` when a module is missing or the set fails `audit_source`.
    """
    directory = Path(directory) if directory is not None else package_dir()
    pending, found = [(module, None) for module in REMOTE_CODE_MODULES], {}
    while pending:
        module, importer = pending.pop()
        if module in found:
            continue
        path = directory / f"{module}.py"
        if not path.is_file():
            needed_by = f" (imported by {importer})" if importer else ""
            raise ValueError(f"remote-code module {module}.py is missing from {directory}{needed_by}")
        found[module] = path
        # dotted names cannot be flat siblings: `audit_source` reports them
        siblings = relative_imports(path.read_text(encoding="utf-8"))
        pending.extend((sibling, path.name) for sibling in siblings if "." not in sibling)
    problems = [
        problem
        for module, path in sorted(found.items())
        for problem in audit_source(path.read_text(encoding="utf-8"), path.name, set(found))
    ]
    if problems:
        raise ValueError("remote-code files cannot be shipped:\n" + "\n".join(f"  {p}" for p in problems))
    return [found[module] for module in sorted(found)]
