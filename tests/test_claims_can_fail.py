"""Every verdict is computed and can fail.

* Every registered experiment ships ``contradicting_runs()``, a runs table in the saved format
  built to contradict the theory, and at least one of its claims fails on it.
* Every record the claims return on that table is a claim (verdict "pass"/"fail") or a finding
  (no verdict), as ``validate.json`` requires.
* No experiment module passes a constant ``True`` verdict to ``claim`` / ``claim_in_interval``
  or writes a dict literal with a constant ``"verdict": "pass"``.

Claims passing on tables that obey the theory are checked beside each experiment's own tests
(``test_experiments_teacher.py``, ``test_experiments_noise_tensor.py``,
``test_subset_sum_coverage.py``, ``test_construction.py``).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pandas as pd
import pytest

from experiments.engine import check_claims
from experiments.registry import all_experiments

EXPERIMENTS_DIR = Path(__file__).resolve().parents[1] / "experiments"
NAMES = sorted(all_experiments())


@pytest.mark.parametrize("name", NAMES)
def test_a_contradicting_table_makes_a_claim_fail(name: str) -> None:
    experiment = all_experiments()[name]
    assert experiment.contradicting_runs is not None, (
        f"{name!r} registers no contradicting_runs: nothing shows that its claims can fail")
    runs = experiment.contradicting_runs()
    assert isinstance(runs, pd.DataFrame) and len(runs) > 0
    assert "trial" in runs.columns, "the table must be in the saved format (one row per trial)"
    records = experiment.claims(runs)
    split = check_claims(name, records)  # raises on a record that is neither claim nor finding
    assert len(split["claims"]) + len(split["findings"]) == len(records)
    assert split["claims"], f"{name!r} makes no claim on its contradicting table"
    verdicts = [c["verdict"] for c in split["claims"]]
    assert "fail" in verdicts, (f"no claim of {name!r} fails on a table built to contradict "
                                f"the theory: {split['claims']}")


@pytest.mark.parametrize("name", NAMES)
def test_contradicting_table_is_deterministic(name: str) -> None:
    experiment = all_experiments()[name]
    if experiment.contradicting_runs is None:
        pytest.skip(f"{name!r} registers no contradicting_runs (reported by the test above)")
    first, second = experiment.contradicting_runs(), experiment.contradicting_runs()
    pd.testing.assert_frame_equal(first, second)
    assert experiment.claims(first) == experiment.claims(second)


# ----------------------------------------------------------------------------- static check

VERDICT_FUNCTIONS = {"claim": 3, "claim_in_interval": None}  # name -> index of the verdict argument


def _called_name(call: ast.Call) -> str | None:
    if isinstance(call.func, ast.Name):
        return call.func.id
    if isinstance(call.func, ast.Attribute):
        return call.func.attr
    return None


def _is_constant_true(node: ast.AST) -> bool:
    """A literal that is always truthy: ``True``, a non-zero number, a non-empty string."""
    return isinstance(node, ast.Constant) and node.value is not None and bool(node.value)


def constant_verdicts(source: str, filename: str = "<string>") -> list[str]:
    """Places in ``source`` where a verdict is a constant pass."""
    problems = []
    for node in ast.walk(ast.parse(source, filename=filename)):
        if isinstance(node, ast.Call) and _called_name(node) in VERDICT_FUNCTIONS:
            index = VERDICT_FUNCTIONS[_called_name(node)]
            verdicts = [kw.value for kw in node.keywords if kw.arg == "passed"]
            if index is not None and len(node.args) > index:
                verdicts.append(node.args[index])
            if any(_is_constant_true(v) for v in verdicts):
                problems.append(f"{filename}:{node.lineno}: {_called_name(node)}(...) with a "
                                "constant true verdict")
        if isinstance(node, ast.Dict):
            for key, value in zip(node.keys, node.values, strict=True):
                if (isinstance(key, ast.Constant) and key.value == "verdict"
                        and isinstance(value, ast.Constant) and value.value == "pass"):
                    problems.append(f"{filename}:{node.lineno}: dict literal with a constant "
                                    "\"verdict\": \"pass\"")
    return problems


def test_the_static_check_catches_constant_verdicts() -> None:
    bad = ('claim("t", 1, 2, True)\n'
           'analysis.claim("t", 1, 2, passed=True)\n'
           'claim_in_interval("t", 1.0, 1.0, (0, 2), passed=1)\n'
           'record = {"claim": "t", "verdict": "pass"}\n')
    assert len(constant_verdicts(bad)) == 4
    fine = ('claim("t", 1, 2, False)\n'
            'claim("t", 1, 2, x > 0)\n'
            'claim("t", 1, 2, passed=ok)\n'
            'record = {"claim": "t", "verdict": "pass" if ok else "fail"}\n')
    assert constant_verdicts(fine) == []


def test_no_experiment_module_has_a_constant_pass_verdict() -> None:
    modules = sorted(EXPERIMENTS_DIR.rglob("*.py"))
    assert len(modules) > 10
    problems = [p for path in modules
                for p in constant_verdicts(path.read_text(), str(path.relative_to(
                    EXPERIMENTS_DIR.parent)))]
    assert problems == []
