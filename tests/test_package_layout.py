"""The package layout the project lead decided (``deep_lottery/__init__.py``,
``lottery_common/__init__.py``), checked on the syntax trees of the source files:

* ``sparse_teacher`` is NumPy + Numba only: no file imports torch, and importing it loads none;
* ``subset_sum`` imports neither ``sparse_teacher`` nor ``deep_lottery``;
* ``lottery_common`` imports none of the other packages;
* no package imports another package's private module (``pkg._x`` or ``from pkg import _x``);
* the data directory is ``$LOTTERY_LAB_DATA``, else ``~/.cache/lottery-lab/data``, never a path
  relative to the source tree.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("lottery_common", "sparse_teacher", "subset_sum", "deep_lottery", "experiments")


def source_files(package: str) -> list[Path]:
    files = sorted((ROOT / package).rglob("*.py"))
    assert files, f"no Python files under {package}/"
    return files


def imports(path: Path) -> list[tuple[str, tuple[str, ...], int]]:
    """``(module, imported names, line)`` of every absolute import in ``path`` (relative imports
    stay inside their package). ``import a.b`` gives ``("a.b", (), line)``."""
    out = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            out += [(alias.name, (), node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            out.append((node.module, tuple(a.name for a in node.names), node.lineno))
    return out


def imported_packages(package: str) -> dict[str, list[str]]:
    """``top-level module -> ["file:line", ...]`` for everything ``package`` imports."""
    found: dict[str, list[str]] = {}
    for path in source_files(package):
        for module, _, line in imports(path):
            found.setdefault(module.split(".")[0], []).append(
                f"{path.relative_to(ROOT)}:{line}")
    return found


def is_private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def test_the_import_parser_sees_what_it_should(tmp_path: Path) -> None:
    probe = tmp_path / "probe.py"
    probe.write_text("import os\nimport torch.nn as nn\nfrom torch import Tensor\n"
                     "from . import sibling\nfrom .x import y\n"
                     "def f():\n    import scipy.sparse\n")
    assert [m for m, _, _ in imports(probe)] == ["os", "torch.nn", "torch", "scipy.sparse"]


def test_sparse_teacher_does_not_import_torch() -> None:
    assert "torch" not in imported_packages("sparse_teacher")
    assert "numpy" in imported_packages("sparse_teacher")  # the parser does see imports
    code = ("import importlib, pkgutil, sys, sparse_teacher\n"
            "for m in pkgutil.iter_modules(sparse_teacher.__path__):\n"
            "    importlib.import_module('sparse_teacher.' + m.name)\n"
            "sys.exit('torch' in sys.modules)\n")
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, f"importing sparse_teacher loads torch: {done.stderr}"


def subset_sum_imports_of_the_torch_and_teacher_packages() -> set[tuple[str, str]]:
    """``(file, module)`` of every import of ``sparse_teacher`` or ``deep_lottery`` in
    ``subset_sum``."""
    return {(str(path.relative_to(ROOT)), module) for path in source_files("subset_sum")
            for module, _, _ in imports(path)
            if module.split(".")[0] in ("sparse_teacher", "deep_lottery")}


def test_subset_sum_imports_neither_sparse_teacher_nor_deep_lottery() -> None:
    found = subset_sum_imports_of_the_torch_and_teacher_packages()
    assert not found, f"subset_sum imports {sorted(found)}"


def test_lottery_common_imports_no_other_package() -> None:
    found = imported_packages("lottery_common")
    offending = {p: found[p] for p in PACKAGES if p != "lottery_common" and p in found}
    assert not offending, f"lottery_common imports {offending}"


def test_no_package_imports_another_packages_private_module() -> None:
    offending = []
    for package in PACKAGES:
        for path in source_files(package):
            for module, names, line in imports(path):
                parts = module.split(".")
                if parts[0] not in PACKAGES or parts[0] == package:
                    continue
                private = [p for p in parts[1:] if is_private(p)] + \
                    [n for n in names if is_private(n)]
                if private:
                    offending.append(f"{path.relative_to(ROOT)}:{line} {module} {private}")
    assert not offending, "private imports across packages:\n" + "\n".join(offending)


def test_data_directory_default(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from lottery_common import DATA_ENV, default_data_dir, resolve_data_dir

    home = tmp_path / "home"
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.delenv(DATA_ENV, raising=False)
    monkeypatch.chdir(tmp_path)
    expected = home / ".cache" / "lottery-lab" / "data"
    assert DATA_ENV == "LOTTERY_LAB_DATA"
    assert default_data_dir() == expected
    assert resolve_data_dir(None) == expected
    monkeypatch.setenv(DATA_ENV, "")  # empty counts as unset
    assert default_data_dir() == expected
    monkeypatch.setenv(DATA_ENV, str(tmp_path / "elsewhere"))
    assert default_data_dir() == tmp_path / "elsewhere"
    assert resolve_data_dir(None) == tmp_path / "elsewhere"
    assert resolve_data_dir(tmp_path / "given") == tmp_path / "given"  # an argument wins
    monkeypatch.setenv(DATA_ENV, "~/data")
    assert default_data_dir() == home / "data"

    # the readers use it: a missing file is looked for there, not next to the sources
    from deep_lottery.data import missing_mnist_files

    monkeypatch.delenv(DATA_ENV)
    message = missing_mnist_files("mnist", ["test"])
    assert message is not None and str(expected) in message
    for path in (default_data_dir(), resolve_data_dir(None)):
        assert path.is_absolute() and ROOT not in path.parents
