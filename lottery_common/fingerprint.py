"""Code fingerprints: a digest of the Python modules that compute a result.

``source_digest(source)`` is ``stable_hash`` of ``ast.dump`` of the module's syntax tree with the
docstrings of the module, its classes and its functions removed. Comments, blank lines, line
breaks and docstrings are therefore not part of it; any change to the code (a constant, an
expression, a default, an annotation, a name) is. The tree is written field by field without
positions and without fields that are None or empty, so Python versions that add such fields give
the same digest.

``module_closure`` finds the modules a module imports, transitively, by a static scan of every
``import`` and ``from ... import`` statement anywhere in the file (inside functions too, so a
lazy ``from deep_lottery.imp import run_imp`` counts). ``from package import name`` is
the submodule ``package.name`` when that file exists, else ``package`` itself (its
``__init__.py``, and through it what it imports). Only modules of the packages named in
``follow`` are followed, and ``exclude`` removes more; files are found on disk without importing
anything. ``modules_digest`` hashes the (name, source digest) pairs of such a set.

Parses are cached per process by each file's bytes: a file is read on every call (so an edit is
seen at once) but an unchanged one is parsed only once.
"""

from __future__ import annotations

import ast
import functools
import importlib.util
import os
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path

from .seeds import stable_hash

__all__ = ["module_closure", "module_file", "modules_digest", "source_digest"]


def _strip_docstrings(tree: ast.AST) -> ast.AST:
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant) \
                    and isinstance(body[0].value.value, str):
                node.body = body[1:] or [ast.Pass()]
    return tree


def _plain_tree(node: object) -> object:
    """The syntax tree as nested lists: ``[type, [field, value], ...]``; positions, and fields
    that are None or empty (which Python versions add or drop), are left out."""
    if isinstance(node, ast.AST):
        fields = [[name, _plain_tree(value)] for name, value in ast.iter_fields(node)
                  if value is not None and value != []]
        return [type(node).__name__, *fields]
    if isinstance(node, list):
        return [_plain_tree(item) for item in node]
    return ["constant", type(node).__name__, repr(node)]


def source_digest(source: str | bytes, filename: str = "<source>") -> str:
    """``stable_hash`` of the module's syntax tree without docstrings (comments never count)."""
    tree = _strip_docstrings(ast.parse(source, filename=filename))
    return stable_hash("python-ast", _plain_tree(tree))


Import = tuple[int, str, tuple[str, ...]]
"""One import statement: (relative level, module or "", imported names); ``import a.b`` is
``(0, "a.b", ())``."""


@functools.lru_cache(maxsize=4096)
def _parsed(source: bytes, filename: str) -> tuple[str, tuple[Import, ...]]:
    tree = ast.parse(source, filename=filename)
    imports: list[Import] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imports.extend((0, alias.name, ()) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            imports.append((node.level, node.module or "", tuple(a.name for a in node.names)))
    return source_digest(source, filename), tuple(imports)


def _read(path: Path) -> tuple[str, tuple[Import, ...]]:
    return _parsed(path.read_bytes(), str(path))


@functools.lru_cache(maxsize=256)
def _package_root(top: str) -> tuple[str | None, str | None]:
    """(directory of package ``top``, or None; file of module ``top``, or None)."""
    try:
        spec = importlib.util.find_spec(top)
    except (ImportError, ValueError):
        return None, None
    if spec is None:
        return None, None
    if spec.submodule_search_locations:
        locations = list(spec.submodule_search_locations)
        return (locations[0] if locations else None), spec.origin
    return None, spec.origin


def module_file(name: str) -> Path | None:
    """The source file of module ``name`` (``.py`` or a package's ``__init__.py``), or None.

    Found from the top-level package's location on disk; nothing is imported but that package's
    spec.
    """
    top, *rest = name.split(".")
    directory, origin = _package_root(top)
    if not rest:
        return Path(origin) if origin and origin.endswith(".py") else None
    if directory is None:
        return None
    candidate = Path(directory).joinpath(*rest)
    if candidate.with_suffix(".py").is_file():
        return candidate.with_suffix(".py")
    if (candidate / "__init__.py").is_file():
        return candidate / "__init__.py"
    return None


def _candidates(imports: Iterable[Import], module: str, is_package: bool,
                follow: frozenset[str]) -> list[str]:
    """Absolute names of the modules of ``follow`` the imports may load (relative ones
    resolved)."""
    package = module if is_package else module.rpartition(".")[0]
    names: list[str] = []
    for level, base, imported in imports:
        if level:
            parts = package.split(".") if package else []
            if level - 1 > len(parts) or not parts:
                continue  # relative import outside a package: cannot be resolved statically
            parts = parts[:len(parts) - (level - 1)]
            base = ".".join(parts + ([base] if base else []))
        if base.split(".")[0] not in follow:
            continue
        if not imported:
            names.append(base)
            continue
        for name in imported:
            sub = f"{base}.{name}" if base else name
            names.append(sub if name != "*" and module_file(sub) is not None else base)
    return names


def module_closure(names: Iterable[str] = (), *, follow: Iterable[str],
                   exclude: Callable[[str], bool] | None = None,
                   scan: Iterable[tuple[str, str | os.PathLike[str]]] = ()) -> dict[str, Path]:
    """The modules ``names`` and every module they import transitively: name -> file.

    Only modules whose top-level package is in ``follow`` and for which ``exclude(name)`` is
    false are included and followed. ``scan`` holds (module name, file) pairs whose imports are
    followed although the modules themselves are not included (an experiment's own module).
    """
    follow = frozenset(follow)

    def wanted(name: str) -> bool:
        return bool(name) and name.split(".")[0] in follow and not (exclude and exclude(name))

    found: dict[str, Path] = {}
    queue: list[tuple[str, Path]] = []
    for name in names:
        path = module_file(name)
        if path is None:
            raise ValueError(f"module {name!r} has no source file on disk")
        if wanted(name) and name not in found:
            found[name] = path
            queue.append((name, path))
    skipped = {str(m) for m, _ in scan}
    for module, path in scan:
        queue.append((str(module), Path(path)))
    while queue:
        module, path = queue.pop()
        _, imports = _read(path)
        for name in _candidates(imports, module, path.name == "__init__.py", follow):
            if name in found or name in skipped or not wanted(name):
                continue
            file = module_file(name)
            if file is not None:
                found[name] = file
                queue.append((name, file))
    return dict(sorted(found.items()))


def modules_digest(modules: Mapping[str, str | os.PathLike[str]]) -> str:
    """``stable_hash`` of the sorted (module name, source digest) pairs of ``modules``."""
    return stable_hash("modules", [[name, _read(Path(path))[0]] for name, path in sorted(modules.items())])
