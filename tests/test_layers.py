"""The low layers (formats, storage, synthetic data) must import without ray and torch."""

import ast
import functools
import re
import subprocess
import sys
from pathlib import Path

LOW_LAYERS = ["finegym_ray.dataset.manifest", "finegym_ray.dataset.labels", "finegym_ray.dataset.sampling",
              "finegym_ray.dataset.augment", "finegym_ray.charts", "finegym_ray.storage", "finegym_ray.store",
              "finegym_ray.synth.generate", "finegym_ray.synth.flow_pairs", "finegym_ray.video",
              "finegym_ray.preprocess.units", "finegym_ray.preprocess.mmaction2", "finegym_ray.dataset.pose_store",
              "finegym_ray.preprocess.clips", "finegym_ray.preprocess.local_copy", "finegym_ray.preprocess.config",
              "finegym_ray.config", "finegym_ray.lease", "finegym_ray.tune.config", "finegym_ray.tune.results",
              "finegym_ray.localize.features", "finegym_ray.video.files", "finegym_ray.video.check",
              "finegym_ray.localize.metric", "finegym_ray.localize.formats", "finegym_ray.localize.score",
              "finegym_ray.download.failures", "finegym_ray.download.fetch", "finegym_ray.download.plan",
              "finegym_ray.dataset.heatmaps", "finegym_ray.pose.input"]
# The step library is what Tune trials, feature extraction and benchmarks share.
TORCH_ONLY = ["finegym_ray.models", "finegym_ray.train.steps"]
# What Ray Data's sampling workers import: torch would add seconds to each process start.
RAY_ONLY = ["finegym_ray.train.data", "finegym_ray.runtime.connect"]

BLOCK = """
import sys
class Block:
    def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] in ('ray', 'torch'):
            raise ImportError('blocked: ' + name)
sys.meta_path.insert(0, Block())
"""


def test_low_layers_import_without_ray_or_torch():
    code = BLOCK + "".join(f"import {m}\n" for m in LOW_LAYERS)
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr


def test_models_import_without_ray():
    code = BLOCK.replace("('ray', 'torch')", "('ray',)") + "".join(f"import {m}\n" for m in TORCH_ONLY)
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr


def test_sampling_code_imports_without_torch():
    code = BLOCK.replace("('ray', 'torch')", "('torch',)") + "".join(f"import {m}\n" for m in RAY_ONLY)
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr


# --- The package's imports, read from its source (module level and inside functions). ---

PACKAGE = Path(__file__).resolve().parent.parent / "finegym_ray"


def _modules() -> dict[str, Path]:
    """Every module of the package by dotted name (a package by its own name)."""
    found = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


def _type_checking_only(tree: ast.Module) -> set[ast.AST]:
    """The imports under ``if TYPE_CHECKING:``, which never run."""
    return {node for block in ast.walk(tree) if isinstance(block, ast.If) and ast.unparse(block.test).endswith(
        "TYPE_CHECKING") for stmt in block.body for node in ast.walk(stmt)}


def _imported(name: str, path: Path, node: ast.Import | ast.ImportFrom, modules: dict[str, Path]) -> list[str]:
    """The package's modules that ``node`` (in module ``name`` at ``path``) imports:
    ``from X import Y`` names module X.Y where there is one, else X."""
    if isinstance(node, ast.Import):
        targets = [alias.name for alias in node.names]
    else:
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        base = ".".join(package.split(".")[:len(package.split(".")) - node.level + 1]) if node.level else ""
        base = ".".join(p for p in (base, node.module or "") if p)
        targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base for alias in node.names]
    found = []
    for target in targets:
        while target and target not in modules:  # a name inside a module: the module
            target = target.rpartition(".")[0]
        if target and target != name:
            found.append(target)
    return found


@functools.cache
def import_graph() -> dict[str, set[str]]:
    """Module -> the package's modules it imports anywhere in its source."""
    modules = _modules()
    graph = {}
    for name, path in modules.items():
        tree = ast.parse(path.read_text(), str(path))
        skip = _type_checking_only(tree)
        graph[name] = {target for node in ast.walk(tree) if isinstance(node, (ast.Import, ast.ImportFrom))
                       and node not in skip for target in _imported(name, path, node, modules)}
    return graph


def import_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    cycles = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return cycles


def test_the_import_graph_sees_imports_everywhere():
    graph = import_graph()
    assert "finegym_ray.cli.smoke" in graph["finegym_ray.cli.train"]  # from . import smoke
    assert "finegym_ray.runtime.connect" in graph["finegym_ray.cli.train"]  # from ..runtime import connect
    assert "finegym_ray.train.run" in graph["finegym_ray.cli.train"]  # inside a function
    assert import_cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_no_import_circle_in_the_package():
    cycles = import_cycles(import_graph())
    assert not cycles, "import circles: " + "; ".join(" <-> ".join(c) for c in cycles)


# The top layers, the command line and the Python API: the library never reaches up to
# either, and neither imports the other.
TOP_LAYERS = ("finegym_ray.cli", "finegym_ray.api")


def _top_layer(module: str) -> str | None:
    return next((top for top in TOP_LAYERS if module == top or module.startswith(top + ".")), None)


def test_only_a_top_layer_imports_itself():
    upward = sorted(f"{name} imports {target}" for name, targets in import_graph().items()
                    for target in targets if _top_layer(target) not in (None, _top_layer(name)))
    assert not upward, upward


def test_the_api_imports_without_ray_or_torch():
    """A notebook imports it first thing: Ray and torch load when a function runs."""
    r = subprocess.run([sys.executable, "-c", BLOCK + "import finegym_ray.api\n"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr


# What Ray offers no public API for: a Ray upgrade should need to look in runtime/ only.
RAY_INTERNALS = ("ray.tune.execution", "ray.tune.impl", "ray.autoscaler.v2", "ray.train.v2", "ray.experimental")


def test_rays_private_apis_are_used_in_runtime_only():
    found = []
    for name, path in _modules().items():
        if name.startswith("finegym_ray.runtime"):
            continue
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "ray":
                modules = [node.module]
                private = [a.name for a in node.names if a.name.startswith("_")]
            elif isinstance(node, ast.Import):
                modules, private = [a.name for a in node.names if a.name.split(".")[0] == "ray"], []
            elif isinstance(node, (ast.Attribute, ast.FunctionDef)) and getattr(node, "attr", getattr(
                    node, "name", "")) in ("_register_sigint_handler", "_global_node"):
                modules, private = [], [ast.unparse(node) if isinstance(node, ast.Attribute) else node.name]
            else:
                continue
            private += [m for m in modules if any(p.startswith("_") for p in m.split("."))
                        or m.startswith(RAY_INTERNALS)]
            found += [f"{path.relative_to(PACKAGE.parent)}:{node.lineno}: {p}" for p in private]
    assert not found, found


def test_refusals_raise_the_bad_input_family():
    """The command line prints a BadInput as one line (exit 2) and gives anything else
    its traceback: a plain ``raise ValueError(...)`` in the package would be a bug."""
    found = [f"{path.relative_to(PACKAGE.parent)}:{node.lineno}" for path in _modules().values()
             for node in ast.walk(ast.parse(path.read_text(), str(path)))
             if isinstance(node, ast.Raise) and isinstance(node.exc, ast.Call)
             and isinstance(node.exc.func, ast.Name) and node.exc.func.id == "ValueError"]
    assert not found, f"raise InputError (finegym_ray/errors.py) instead: {found}"


# --- The preprocessed store's layout has one owner: finegym_ray/store.py. ---


def _store_names() -> tuple[set[str], set[str]]:
    """(file names, folder names) of the store's layout, as store.py names them. Left
    out: ``runs`` and ``config.yaml``, which name other folders' parts too."""
    from finegym_ray import store

    return ({*store.MANIFEST_TABLES.values(), store.SUMMARY, store.SETTINGS},
            {store.CLIPS, store.ERRORS, store.MANIFEST, store.POSES})


def layout_spelled_out(tree: ast.Module, files: set[str], folders: set[str]) -> list[tuple[int, str]]:
    """(line, string) where ``tree`` builds a path of the store from a literal name: a
    file name as a whole string; a folder name given to a ``*join`` or ``safe_name`` call
    or bound to a constant (``ERRORS = "errors"``); a name as a segment of a path string
    (``"manifest/events.parquet"``) or of an f-string path (``f"{out}/clips/{unit}"``).
    Docstrings and prose (a string with spaces that mentions ``summary.json``) are not
    paths."""
    docstrings = {id(node.body[0].value) for node in ast.walk(tree)
                  if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))
                  and node.body and isinstance(node.body[0], ast.Expr) and isinstance(node.body[0].value, ast.Constant)}
    parent = {id(child): node for node in ast.walk(tree) for child in ast.iter_child_nodes(node)}
    segment = re.compile(rf"(?:^|/)(?:{'|'.join(map(re.escape, sorted(files | folders)))})(?=/|$)")
    after_value = re.compile(rf"^/(?:{'|'.join(map(re.escape, sorted(files | folders)))})(?![\w.])")
    found = []
    for node in ast.walk(tree):
        if not (isinstance(node, ast.Constant) and isinstance(node.value, str)) or id(node) in docstrings:
            continue
        text, up = node.value, parent.get(id(node))
        called = isinstance(up, ast.Call) and node in up.args and ast.unparse(up.func).split(".")[-1] in (
            "join", "safe_name")
        bound = isinstance(up, (ast.Assign, ast.AnnAssign)) and up.value is node
        follows_value = isinstance(up, ast.JoinedStr) and up.values.index(node) > 0 and isinstance(
            up.values[up.values.index(node) - 1], ast.FormattedValue)
        if (text in files or (text in folders and (called or bound))
                or (not re.search(r"\s", text) and "/" in text and segment.search(text))
                or (follows_value and after_value.search(text))):
            found.append((node.lineno, text))
    return sorted(found)


def test_the_layout_check_sees_each_way_of_spelling_a_path():
    files, folders = {"summary.json", "preprocess.json"}, {"clips", "errors"}
    code = '''
"""OUT/clips/<unit>.parquet and OUT/summary.json, in a docstring."""
ERRORS = "errors"
a = storage.join(out, "clips")
b = safe_name(os.path.join(out, "errors"), unit)
c = f"{root}/clips/{unit}.parquet"
d = f"{out}/clips holds 2 shards"
e = storage.read_text("x/summary.json")
f = {"name": "preprocess.json"}
ok = {"clips": 3, "errors": 0}
ok = say("clips", "a message about summary.json, and OUT/errors/ in prose")
ok = f"{n} clips, {m} errors"
'''
    found = [line for line, _ in layout_spelled_out(ast.parse(code), files, folders)]
    assert found == [3, 4, 5, 6, 7, 8, 9], found


def test_only_the_store_module_spells_out_the_store_layout():
    """Where training, the demo, the CLI, extraction and the studies find the manifest,
    clips, errors, summary and settings of a store: through finegym_ray/store.py."""
    files, folders = _store_names()
    found = [f"{path.relative_to(PACKAGE.parent)}:{line}: {text!r}" for name, path in _modules().items()
             if name != "finegym_ray.store"
             for line, text in layout_spelled_out(ast.parse(path.read_text(), str(path)), files, folders)]
    assert not found, f"use finegym_ray/store.py's names and paths instead: {found}"
