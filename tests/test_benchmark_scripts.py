"""The scripts kept with the benchmark results (`benchmarks/results/*/`)
still find what they use of the package.

They import package internals (the runner, recovery, the bench's arms) and
patch some of their methods to time them; moving an internal breaks them
silently, or leaves a patch with nothing to patch. Each script is
compiled, and every `keras_hybrid` name it imports, every attribute it reads
or patches on one (`R.HybridRunner.read_statistics`), and every
`(object, "name")` pair or `f(object, name)` call over a literal list of
names it patches by (`getattr(cls, name)`), must exist.
"""

import ast
import glob
import importlib
import os

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPTS = sorted(
    glob.glob(os.path.join(ROOT, "benchmarks", "**", "*.py"), recursive=True)
)
_MISSING = object()


def _import(module):
    return importlib.import_module(module)


def _bind_imports(tree, problems):
    """`{local name: object}` of the script's `keras_hybrid` imports."""
    bound = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] != "keras_hybrid":
                    continue
                try:
                    module = _import(alias.name)
                except ImportError as e:
                    problems.append(f"import {alias.name}: {e}")
                    continue
                if alias.asname:
                    bound[alias.asname] = module
                else:
                    bound["keras_hybrid"] = _import("keras_hybrid")
        elif isinstance(node, ast.ImportFrom) and node.module and (
            node.module.split(".")[0] == "keras_hybrid"
        ):
            try:
                module = _import(node.module)
            except ImportError as e:
                problems.append(f"from {node.module}: {e}")
                continue
            for alias in node.names:
                value = getattr(module, alias.name, _MISSING)
                if value is _MISSING:
                    try:
                        value = _import(f"{node.module}.{alias.name}")
                    except ImportError:
                        problems.append(
                            f"from {node.module} import {alias.name}")
                        continue
                bound[alias.asname or alias.name] = value
    return bound


def _resolve(node, bound):
    """The object an expression rooted at an imported name names, with the
    dotted text; `(None, None)` if it is not rooted there."""
    if isinstance(node, ast.Name):
        if node.id in bound:
            return bound[node.id], node.id
        return None, None
    if isinstance(node, ast.Attribute):
        parent, text = _resolve(node.value, bound)
        if text is None or parent is _MISSING:
            return (_MISSING, text) if parent is _MISSING else (None, None)
        return getattr(parent, node.attr, _MISSING), f"{text}.{node.attr}"
    return None, None


def _literal_strings(node):
    if isinstance(node, (ast.List, ast.Tuple)) and all(
        isinstance(e, ast.Constant) and isinstance(e.value, str)
        for e in node.elts
    ):
        return [e.value for e in node.elts]
    return None


def _problems(path):
    with open(path, encoding="utf-8") as f:
        source = f.read()
    tree = ast.parse(source, path)
    compile(tree, path, "exec")
    problems = []
    bound = _bind_imports(tree, problems)
    loops = {}  # loop variable -> the literal names it runs over
    for node in ast.walk(tree):
        if isinstance(node, ast.For) and isinstance(node.target, ast.Name):
            names = _literal_strings(node.iter)
            if names is not None:
                loops[node.target.id] = names
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute):
            value, text = _resolve(node, bound)
            if value is _MISSING:
                parent, _ = _resolve(node.value, bound)
                if parent is not _MISSING:  # report the first missing link
                    problems.append(text)
        pairs = []
        if isinstance(node, ast.Tuple) and len(node.elts) == 2:
            pairs.append(tuple(node.elts))
        if isinstance(node, ast.Call) and len(node.args) >= 2:
            pairs.append(tuple(node.args[:2]))
        for target, name in pairs:
            obj, text = _resolve(target, bound)
            if text is None or obj is _MISSING:
                continue
            if isinstance(name, ast.Constant) and isinstance(name.value, str):
                names = [name.value]
            elif isinstance(name, ast.Name) and name.id in loops:
                names = loops[name.id]
            else:
                continue
            problems += [f"{text}.{n}" for n in names
                         if not hasattr(obj, n)]
    return sorted(set(problems))


def test_there_are_scripts():
    assert len(SCRIPTS) >= 10


@pytest.mark.parametrize(
    "path", SCRIPTS, ids=[os.path.relpath(p, ROOT) for p in SCRIPTS]
)
def test_script_finds_what_it_uses(path):
    assert _problems(path) == []
