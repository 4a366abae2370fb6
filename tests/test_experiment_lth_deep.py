"""lth-deep (Frankle & Carbin 2019, Figs. 7-8): ``run_cell`` on tiny generated MNIST files for both
nets and both pruning scopes (what global pruning leaves dense), the paper's layer sizes, the
training settings, the parameter rules, missing data, claims that pass on a table shaped like the
paper and fail on contradicting or failed ones, and the figure."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from test_deep_lottery_imp import write_learnable_mnist

from experiments import engine
from experiments.engine import check_claims
from experiments.frankle2019 import lth_deep as ld
from lottery_common import DATA_ENV

pytestmark = pytest.mark.usefixtures("one_torch_thread")

EXPERIMENT = ld.EXPERIMENT


@pytest.fixture
def tiny_mnist(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Learnable MNIST-format files (400 test-split images), found through $LOTTERY_LAB_DATA."""
    write_learnable_mnist(tmp_path / "mnist", 20, 400, seed=0)
    monkeypatch.setenv(DATA_ENV, str(tmp_path))
    return tmp_path


def _cell(**changes: object) -> dict:
    cell = {"dataset": "mnist", "mnist_files": "test", "N": 100, "n_val": 50, "n_test": 100,
            "levels": 2, "iterations": 6, "eval_every": 3, "batch_size": 16, "model": "vgg19",
            "width": 0.0625, "lr": 0.1, "warmup": 2, "scope": "global", "reinit": True,
            "fraction": 0.3, "augment": False, "device": "cpu"}
    cell.update(changes)
    return cell


def _weights(model: str, width: float, shape: tuple[int, ...] = (1, 28, 28)) -> dict[str, int]:
    from deep_lottery.models import build_model, prunable_names

    net = build_model(model, seed=0, input_shape=shape, width=width)
    state = net.state_dict()
    return {n: state[n].numel() for n in prunable_names(net)}


@pytest.mark.parametrize("model, width", [("vgg19", 0.0625), ("resnet20", 2)])
def test_global_rows_prune_all_but_the_ignored_tensors(tiny_mnist: Path, model: str,
                                                       width: float) -> None:
    row = ld.run_cell(_cell(model=model, width=width), seed=5)
    assert row["imp_level"] == [0, 1, 2] and row["reinit_level"] == [1, 2]
    assert row["reinit_density"] == row["imp_density"][1:]
    assert row["device"] == "cpu" and row["images_per_second"] > 0
    assert all(0 <= a <= 1 for a in row["imp_test_metric_end"] + row["reinit_test_metric_end"])
    sizes = _weights(model, width)
    assert set(ld.IGNORE[model]) <= set(sizes)
    if model == "resnet20":  # F&C leave the fc and the two 1x1 shortcut convs dense
        assert set(ld.IGNORE[model]) == {"fc.weight"} | {n for n in sizes if "shortcut" in n}
    ignored = sum(sizes[n] for n in ld.IGNORE[model])
    rest = sum(sizes.values()) - ignored
    kept = rest - math.ceil(0.3 * rest)
    assert row["imp_density"][1] == pytest.approx((kept + ignored) / sum(sizes.values()))


def test_layerwise_row_without_reinit_keeps_the_output_layer(tiny_mnist: Path) -> None:
    row = ld.run_cell(_cell(model="resnet20", width=2, scope="layerwise", reinit=False,
                            warmup=0, levels=1), seed=5)
    assert row["imp_level"] == [0, 1] and not any(k.startswith("reinit_") for k in row)
    sizes = _weights("resnet20", 2)
    kept = sum(n if name == "fc.weight" else n - math.floor(0.3 * n + 0.5)
               for name, n in sizes.items())
    assert row["imp_density"][1] == pytest.approx(kept / sum(sizes.values()))


def test_the_nets_are_the_papers() -> None:
    """VGG-19 (1728, 36864, ..., 2.36M conv weights, fc 5120) and F&C's 'Resnet-18', the 20-layer
    16/32/64 net (270K conv weights of which 2560 in shortcuts, fc 640), on CIFAR inputs."""
    from deep_lottery.models import build_model, prunable_names

    vgg = build_model("vgg19", seed=0, input_shape=(3, 32, 32))
    state = vgg.state_dict()
    convs = [state[n].numel() for n in prunable_names(vgg) if n != "fc.weight"]
    assert len(convs) == 16 and convs[:2] == [1728, 36864] and convs[-1] == 2_359_296
    assert state["fc.weight"].numel() == 5120
    assert sum(p.numel() for p in vgg.parameters()) == pytest.approx(20.0e6, rel=0.01)
    resnet = _weights("resnet20", 16, (3, 32, 32))
    assert len(resnet) == 1 + 18 + 2 + 1  # conv, 9 blocks x 2 convs, 2 shortcuts, fc: 20 layers
    assert sum(v for n, v in resnet.items() if n != "fc.weight") == 270_256
    assert sum(v for n, v in resnet.items() if "shortcut" in n) == 2560
    assert resnet["fc.weight"] == 640


def test_training_and_pruning_settings() -> None:
    vgg = ld.train_config(_cell(iterations=112480, warmup=10000, batch_size=64))
    assert (vgg.optimizer, vgg.momentum, vgg.weight_decay) == ("sgd", 0.9, 1e-4)
    assert vgg.milestones == (56240, 84360) and vgg.warmup_iterations == 10000
    assert vgg.lr_at(0) == pytest.approx(0.1 / 10000) and vgg.lr_at(9999) == pytest.approx(0.1)
    assert vgg.lr_at(60000) == pytest.approx(0.01)
    resnet = ld.train_config(_cell(model="resnet20", iterations=30000, warmup=0))
    assert resnet.milestones == (20000, 25000) and resnet.lr_at(0) == pytest.approx(0.1)
    glob = ld.prune_config(_cell(model="resnet20", fraction=0.2))
    assert (glob.scope, glob.fraction, glob.ignore) == ("global", 0.2, ld.IGNORE["resnet20"])
    layer = ld.prune_config(_cell(scope="layerwise"))
    assert (layer.scope, layer.output_fraction) == ("layerwise", 0.0)


def test_parameter_rules() -> None:
    for size in ("quick", "full"):
        keys = engine.grid_keys(EXPERIMENT.size(size))
        assert not set(keys) - set(EXPERIMENT.params)
        for params in engine.expand_cells(EXPERIMENT, engine.Selection(size)).values():
            assert EXPERIMENT.cell_problems(params) == []
    problems = EXPERIMENT.cell_problems(_cell(model="resnet20", width=2.5))
    assert problems and problems[0][0] == "width" and "integer" in problems[0][1]
    assert EXPERIMENT.cell_problems(_cell(warmup=7))[0][0] == "warmup"  # above iterations
    assert EXPERIMENT.cell_problems(_cell(scope="random"))[0][0] == "scope"
    assert EXPERIMENT.cell_problems(_cell(N=9900))[0][0] == "N"


def test_missing_data(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(DATA_ENV, str(tmp_path))
    assert "mnist" in EXPERIMENT.missing_data("quick").lower()
    assert "cifar10" in EXPERIMENT.missing_data("full").lower()
    write_learnable_mnist(tmp_path / "mnist", 20, 40, seed=0)
    assert EXPERIMENT.missing_data("quick") is None


def _paper_like(no_warmup_gap: float = 0.0, warmup_gap: float = 0.03,
                scope_gap: float = 0.02) -> pd.DataFrame:
    """``contradicting_runs`` rewritten to F&C's pattern: ticket - reinit = ``no_warmup_gap``
    at lr 0.1 and ``warmup_gap`` with warmup at every pruned level; layer-wise = global -
    ``scope_gap`` at every pruned level."""
    runs = ld.contradicting_runs()
    glob = {}
    for i, row in runs.iterrows():
        if row["scope"] == "global":
            gap = warmup_gap if row["warmup"] else no_warmup_gap
            runs.at[i, "reinit_test_metric_end"] = [a - gap for a in row["imp_test_metric_end"][1:]]
            glob[(row["model"], row["trial"])] = row["imp_test_metric_end"]
    for i, row in runs.iterrows():
        if row["scope"] == "layerwise":
            acc = glob[(row["model"], row["trial"])]
            runs.at[i, "imp_test_metric_end"] = [acc[0]] + [a - scope_gap for a in acc[1:]]
    return runs


def _verdicts(runs: pd.DataFrame) -> list[str]:
    return [c["verdict"] for c in check_claims("lth-deep", ld.claims(runs))["claims"]]


def test_claims_pass_on_the_papers_pattern_and_fail_otherwise() -> None:
    assert _verdicts(_paper_like()) == ["pass"] * 5
    assert _verdicts(_paper_like(no_warmup_gap=0.005)) == ["pass"] * 5  # within the margin
    assert _verdicts(_paper_like(no_warmup_gap=0.015)) == ["fail", "pass", "fail", "pass", "pass"]
    assert _verdicts(_paper_like(warmup_gap=0.005)) == ["pass", "fail", "pass", "fail", "pass"]
    assert _verdicts(_paper_like(scope_gap=-0.01))[-1] == "fail"
    assert _verdicts(ld.contradicting_runs()) == ["fail"] * 5
    failed = _paper_like()
    for column in failed.columns:
        if column.endswith("_test_metric_end"):
            failed[column] = [[math.nan] * len(v) if isinstance(v, list) else v
                              for v in failed[column]]
    assert _verdicts(failed) == ["fail"] * 5
    only_vgg = _paper_like()[lambda t: t["model"] == "vgg19"]
    assert _verdicts(only_vgg) == ["pass"] * 3
    records = check_claims("lth-deep", ld.claims(_paper_like()))
    assert any("smallest P_m" in f["finding"] for f in records["findings"])


def test_plot_writes_files_and_copes_with_one_row(tmp_path: Path) -> None:
    ld.plot(_paper_like(), tmp_path / "deep")
    assert (tmp_path / "deep.png").stat().st_size > 0 and (tmp_path / "deep.pdf").exists()
    ld.plot(ld.contradicting_runs().iloc[:1], tmp_path / "one")
    assert (tmp_path / "one.png").exists()


def test_tiny_runs_through_claims_and_plot(tiny_mnist: Path, tmp_path: Path) -> None:
    rows = []
    for scope, reinit in (("global", True), ("layerwise", False)):
        cell = _cell(scope=scope, reinit=reinit, levels=1, iterations=4, eval_every=2)
        rows.append({**cell, **ld.run_cell(cell, seed=2), "trial": 0})
    runs = pd.DataFrame(rows)
    records = check_claims("lth-deep", ld.claims(runs))
    assert len(records["claims"]) == 3
    assert all(np.isfinite(float(r["imp_test_metric_end"][1])) for _, r in runs.iterrows())
    ld.plot(runs, tmp_path / "tiny")
    assert (tmp_path / "tiny.png").exists()
