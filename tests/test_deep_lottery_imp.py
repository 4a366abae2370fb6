"""IMP end to end: rewinding restores the masked initial weights exactly, controls do what they
say, runs resume, tiny runs on synthetic data and on MNIST-format files, the experiments'
run_cell / plot / claims, and CPU-vs-CUDA agreement when a GPU is present."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from deep_lottery import imp as imp_module
from deep_lottery.data import teacher_splits, vision_splits
from deep_lottery.device import choose_device
from deep_lottery.idx_files import write_idx
from deep_lottery.imp import IMPConfig, run_directory, run_imp
from deep_lottery.masks import Mask
from deep_lottery.models import build_model
from deep_lottery.pruning import PruneConfig
from deep_lottery.training import TrainConfig, train

pytestmark = pytest.mark.usefixtures("one_torch_thread")



def write_learnable_mnist(folder: Path, n_train: int, n_test: int, seed: int) -> None:
    """MNIST-format files whose class k is a bright 6x6 patch at a k-dependent place plus noise."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        labels = rng.integers(0, 10, size=n).astype(np.uint8)
        images = rng.integers(0, 60, size=(n, 28, 28)).astype(np.uint8)
        for i, k in enumerate(labels):
            r, c = 2 + 8 * (k // 4), 2 + 6 * (k % 4)
            images[i, r:r + 6, c:c + 6] = 255
        write_idx(folder / f"{prefix}-images-idx3-ubyte.gz", images)
        write_idx(folder / f"{prefix}-labels-idx1-ubyte.gz", labels)


@pytest.fixture(scope="module")
def mnist_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("data")
    write_learnable_mnist(root / "mnist", 700, 200, seed=0)
    return root


@pytest.fixture(scope="module")
def small_splits():
    return teacher_splits(d=20, K=2, r_star=4, n_train=200, n_val=50, n_test=100,
                          noise_level=1e-3, seed=0)


def student(seed: int) -> torch.nn.Module:
    return build_model("student", seed=seed, d=20, K=2)


def tiny_config(levels: int = 3, iterations: int = 30, rewind: int = 0, seed: int = 0
                ) -> IMPConfig:
    return IMPConfig(levels=levels, train=TrainConfig(iterations=iterations, batch_size=50,
                                                      lr=1e-2, eval_every=10),
                     prune=PruneConfig(fraction=0.2), rewind_iteration=rewind, seed=seed)


@pytest.fixture
def starts(monkeypatch: pytest.MonkeyPatch) -> dict[str, dict]:
    """Record the model and mask every IMP level starts training from (keyed by branch/level)."""
    seen: dict[str, dict] = {}

    def spy(model, mask, *args, **kwargs):
        seen[kwargs["desc"]] = {"state": {k: v.clone() for k, v in model.state_dict().items()},
                                "mask": mask, "start": kwargs["start_iteration"]}
        return train(model, mask, *args, **kwargs)

    monkeypatch.setattr(imp_module, "train", spy)
    return seen


def test_reset_restores_masked_init_and_controls_differ(small_splits, starts, tmp_path) -> None:
    config = tiny_config(levels=3)
    records = run_imp(student, small_splits, config, task="regression", device="cpu",
                      branches=("imp", "reinit", "random_prune", "one_shot"),
                      out_dir=tmp_path, progress=False)
    init = student(config.seed).state_dict()["hidden.weight"]
    previous = Mask.ones_like(student(0))
    kept = previous.num_total
    for level in range(1, 4):
        s = starts[f"imp L{level}"]
        mask = s["mask"]["hidden.weight"]
        assert torch.equal(s["state"]["hidden.weight"], init * mask)  # exact rewind to theta_0
        assert s["mask"].is_subset_of(previous)  # masks only shrink
        previous = s["mask"]
        kept = kept - int(np.floor(0.2 * kept + 0.5))  # round(0.2 kept) pruned per level
        assert s["mask"].num_kept == kept
        # random reinitialization: same mask, different (fresh) weights, zeros kept
        r = starts[f"reinit L{level}"]
        assert r["mask"] == s["mask"]
        assert torch.count_nonzero(r["state"]["hidden.weight"][~mask]) == 0
        assert not torch.equal(r["state"]["hidden.weight"], s["state"]["hidden.weight"])
        # random pruning: same count, other positions, rewound weights on them
        p = starts[f"random_prune L{level}"]
        assert p["mask"].num_kept == s["mask"].num_kept and p["mask"] != s["mask"]
        assert torch.equal(p["state"]["hidden.weight"], init * p["mask"]["hidden.weight"])
        o = starts[f"one_shot L{level}"]
        assert o["mask"].num_kept == s["mask"].num_kept  # same schedule, pruned at once
    assert o["mask"] != s["mask"]  # one-shot and iterative masks differ at the last level
    assert {(r["branch"], r["level"]) for r in records} == (
        {("imp", lv) for lv in range(4)}
        | {(b, lv) for b in ("reinit", "random_prune", "one_shot") for lv in range(1, 4)})
    for r in records:
        assert np.isfinite(r["test_metric_at_stop"]) and 0 <= r["early_stop_iteration"] <= 30


def test_rewind_to_iteration_k(small_splits, starts, tmp_path) -> None:
    config = tiny_config(levels=2, iterations=30, rewind=7)
    records = run_imp(student, small_splits, config, task="regression", device="cpu",
                      out_dir=tmp_path, progress=False)
    rewind = torch.load(tmp_path / "rewind.pth", weights_only=True)["hidden.weight"]
    # theta_k is what 7 iterations of the same schedule and data order give
    short = student(0)
    cfg7 = TrainConfig(iterations=7, batch_size=50, lr=1e-2, eval_every=10)
    train(short, Mask.ones_like(short), small_splits, cfg7, task="regression",
          device=torch.device("cpu"))
    assert torch.allclose(rewind, short.hidden.weight.detach(), atol=1e-7, rtol=0)
    assert not torch.equal(rewind, student(0).hidden.weight.detach())
    for level in (1, 2):
        s = starts[f"imp L{level}"]
        assert s["start"] == 7
        assert torch.equal(s["state"]["hidden.weight"], rewind * s["mask"]["hidden.weight"])
    assert [r["start_iteration"] for r in records] == [0, 7, 7]


def test_runs_resume_and_refuse_other_hparams(small_splits, tmp_path, monkeypatch) -> None:
    config = tiny_config(levels=3)
    first = run_imp(student, small_splits, config, task="regression", device="cpu",
                    out_dir=tmp_path, progress=False)
    final2 = torch.load(tmp_path / "imp" / "level_2" / "final.pth", weights_only=True)
    shutil.rmtree(tmp_path / "imp" / "level_2")  # as if killed during level 2
    shutil.rmtree(tmp_path / "imp" / "level_3")
    calls = []
    real_train = imp_module.train

    def counting(*args, **kwargs):
        calls.append(kwargs["desc"])
        return real_train(*args, **kwargs)

    monkeypatch.setattr(imp_module, "train", counting)
    second = run_imp(student, small_splits, config, task="regression", device="cpu",
                     out_dir=tmp_path, progress=False)
    assert calls == ["imp L2", "imp L3"]  # levels 0 and 1 were skipped
    again = torch.load(tmp_path / "imp" / "level_2" / "final.pth", weights_only=True)
    assert torch.equal(again["hidden.weight"], final2["hidden.weight"])
    def results(records):  # throughput is a timing, not a result
        return [json.dumps({k: v for k, v in r.items() if k != "images_per_second"},
                           sort_keys=True) for r in records]

    assert results(first) == results(second)
    with pytest.raises(ValueError, match="other hyperparameters"):
        run_imp(student, small_splits, tiny_config(levels=3, seed=1), task="regression",
                device="cpu", out_dir=tmp_path, progress=False)
    a, b = run_directory("r", config), run_directory("r", tiny_config(levels=3))
    assert a == b and a != run_directory("r", tiny_config(levels=4))


def test_imp_on_synthetic_teacher_finds_the_support(tmp_path: Path) -> None:
    """K=2, d=20, r*=4 (20%): pruning to the teacher's density keeps exactly the teacher's
    support and lowers the test error; pruning past it raises the error by orders of magnitude
    (the claim of Zhang et al. Fig. 6)."""
    splits = teacher_splits(d=20, K=2, r_star=4, n_train=400, n_val=100, n_test=500,
                            noise_level=1e-3, seed=1)
    f = 1 - 0.2 ** (1 / 3)
    config = IMPConfig(levels=4, train=TrainConfig(iterations=600, batch_size=400, lr=1e-2,
                                                   eval_every=50),
                       prune=PruneConfig(fraction=f), seed=2)
    records = run_imp(student, splits, config, task="regression", device="cpu", progress=False,
                      out_dir=tmp_path)
    err = {r["level"]: r["test_metric_at_stop"] for r in records}
    assert [round(r["density"], 3) for r in records] == [1.0, 0.575, 0.325, 0.2, 0.125]  # 40, 23, 13, 8, 5
    assert err[3] < err[0]
    assert err[4] > 100 * err[3]
    teacher = splits.info["teacher"]
    mask = Mask.load(tmp_path / "imp" / "level_3" / "mask.pth")["hidden.weight"]  # (K, d)
    found = sorted(tuple(np.nonzero(row.numpy())[0]) for row in mask)
    assert found == sorted(tuple(s) for s in teacher.supports)


def test_imp_on_tiny_mnist_files(mnist_dir: Path) -> None:
    splits = vision_splits("mnist", data_dir=mnist_dir, n_val=100)
    config = IMPConfig(levels=2, train=TrainConfig(iterations=80, batch_size=60, eval_every=20),
                       prune=PruneConfig(fraction=0.2), seed=0)
    records = run_imp(lambda s: build_model("lenet_300_100", seed=s), splits, config,
                      task="classification", device="cpu", progress=False)
    assert [r["level"] for r in records] == [0, 1, 2]
    for r in records:
        assert r["test_metric_end"] > 0.8  # well above chance (0.1): it learned the patches
        assert r["train_metric_end"] > 0.8
    fc1 = 784 * 300
    assert records[2]["num_kept"] < records[1]["num_kept"] < records[0]["num_kept"]
    assert records[1]["num_kept"] == round(0.8 * fc1) + round(0.8 * 300 * 100) + round(0.9 * 1000)


def test_experiments_run_cell_plot_claims(mnist_dir: Path, tmp_path: Path) -> None:
    from experiments.zhang2021 import imp_mnist, imp_synthetic

    row = imp_synthetic.run_cell({"N": 200, "levels": 2, "iterations": 40, "n_val": 50}, 3)
    assert len(row["imp_density"]) == 3 and row["imp_level"] == [0, 1, 2]
    runs = pd.DataFrame([{**row, "N": 200, "trial": 0}, {**row, "N": 400, "trial": 0}])
    imp_synthetic.plot(runs, tmp_path / "syn")
    assert (tmp_path / "syn.png").stat().st_size > 0 and (tmp_path / "syn.pdf").exists()
    for c in imp_synthetic.claims(runs):
        assert c["verdict"] in ("pass", "fail") and c["claim"]

    params = {"N": 300, "levels": 2, "iterations": 30, "eval_every": 10, "n_val": 100,
              "n_test": 0, "mnist_files": "train", "data_dir": str(mnist_dir)}
    row = imp_mnist.run_cell(params, 1)
    runs = pd.DataFrame([{**row, "N": n, "trial": 0} for n in (300, 600)])
    imp_mnist.plot(runs, tmp_path / "mnist")
    assert (tmp_path / "mnist.png").exists()
    verdicts = imp_mnist.claims(runs)
    assert sum("verdict" in c for c in verdicts) == 2
    assert all(c["verdict"] in ("pass", "fail") if "verdict" in c else c["finding"]
               for c in verdicts)
    # lth-lenet: tests/test_experiment_lth_lenet.py


def _imp_mnist_runs(accuracy) -> pd.DataFrame:
    """Runs rows as the engine saves them: N, trial and ``records_to_row``'s per-level lists,
    with ``accuracy(i_n, trial, level)`` the test accuracy at level ``level`` (density 0.8^level)."""
    from deep_lottery.tables import records_to_row

    rows = []
    for i, n in enumerate((1000, 3000, 7000)):
        for trial in range(3):
            records = [{"branch": "imp", "level": lv, "density": 0.8**lv,
                        "early_stop_iteration": 100.0, "test_metric_at_stop": accuracy(i, trial, lv),
                        "test_metric_end": 0.9, "train_metric_end": 1.0, "val_loss_min": 0.2}
                       for lv in range(10)]
            rows.append({"N": n, "trial": trial, **records_to_row(records)})
    return pd.DataFrame(rows)


def test_imp_mnist_claims_pass_on_consistent_runs_and_fail_on_contradicting_runs() -> None:
    from experiments.registry import get
    from experiments.zhang2021 import imp_mnist

    def consistent(i: int, trial: int, level: int) -> float:
        # tickets gain 0.3 pt in [20%, 100%) (noisy per trial), drop below it; more data helps
        gain = (0.003 + 0.002 * ((trial + level) % 3 - 1)) if 0 < level <= 7 else -0.01 * (level > 7)
        return 0.93 + 0.015 * i + gain

    verdicts = imp_mnist.claims(_imp_mnist_runs(consistent))
    claims = [c for c in verdicts if "verdict" in c]
    assert len(claims) == 2 and all(c["verdict"] == "pass" for c in claims), claims
    findings = [f["finding"] for f in verdicts if "finding" in f]
    assert any("selection" in f for f in findings) and any("overly pruned" in f for f in findings)

    # the best level beats dense everywhere, but the declared range loses on average: fails
    def selected(i: int, trial: int, level: int) -> float:
        return 0.93 + 0.015 * i + (0.004 if level == 3 else -0.003 * (level > 0))

    assert imp_mnist.claims(_imp_mnist_runs(selected))[0]["verdict"] == "fail"
    # more data is less accurate (same gains from pruning): the second claim fails
    flipped = imp_mnist.claims(_imp_mnist_runs(
        lambda i, trial, lv: consistent(i, trial, lv) - 0.03 * i))
    assert [c["verdict"] for c in flipped if "verdict" in c] == ["pass", "fail"]

    contradicting = get("imp-mnist").contradicting_runs
    assert contradicting is not None
    runs = contradicting()
    assert runs.equals(contradicting())  # deterministic
    assert {"N", "trial", "imp_level", "imp_density", "imp_test_metric_at_stop"} <= set(runs)
    assert any(c["verdict"] == "fail" for c in imp_mnist.claims(runs) if "verdict" in c)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_cpu_and_cuda_agree_on_a_fixed_seed(small_splits) -> None:
    config = IMPConfig(levels=2, train=TrainConfig(iterations=40, batch_size=50, lr=1e-2,
                                                   eval_every=10, amp=False),
                       prune=PruneConfig(fraction=0.2), seed=5)
    cpu = run_imp(student, small_splits, config, task="regression", device="cpu",
                  progress=False)
    gpu = run_imp(student, small_splits, config, task="regression",
                  device=choose_device("cuda"), progress=False)
    for a, b in zip(cpu, gpu):
        assert a["num_kept"] == b["num_kept"]
        assert a["test_metric_end"] == pytest.approx(b["test_metric_end"], rel=1e-3, abs=1e-6)


def test_cifar_resnet_global_imp_with_augmentation(tmp_path: Path) -> None:
    """CIFAR pickles -> ResNet-20 with BatchNorm, SGD momentum + weight decay, flip/crop
    augmentation, global pruning with the output layer ignored, rewinding to iteration 2."""
    import pickle

    rng = np.random.default_rng(0)
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        batch = {"data": rng.integers(0, 256, size=(8, 3072), dtype=np.uint8),
                 "labels": rng.integers(0, 10, size=8).tolist()}
        with open(folder / name, "wb") as fh:
            pickle.dump(batch, fh)
    splits = vision_splits("cifar10", data_dir=tmp_path, n_val=10)
    assert splits.train.x.shape[1:] == (3, 32, 32) and len(splits.train) == 30
    config = IMPConfig(levels=1, rewind_iteration=2,
                       train=TrainConfig(iterations=4, batch_size=10, optimizer="sgd", lr=0.1,
                                         momentum=0.9, weight_decay=1e-4, augment=True,
                                         eval_every=2),
                       prune=PruneConfig(scope="global", ignore=("fc.weight",)), seed=0)
    records = run_imp(lambda s: build_model("resnet20", seed=s, init="kaiming"), splits, config,
                      task="classification", device="cpu", out_dir=tmp_path / "run",
                      progress=False)
    total = records[0]["num_kept"]
    fc = 64 * 10
    assert records[1]["num_kept"] == total - int(np.ceil(0.2 * (total - fc)))
    final = torch.load(tmp_path / "run" / "imp" / "level_1" / "final.pth", weights_only=True)
    mask = Mask.load(tmp_path / "run" / "imp" / "level_1" / "mask.pth")
    for name, keep in mask.items():
        assert torch.count_nonzero(final[name][~keep]) == 0
    init = torch.load(tmp_path / "run" / "init.pth", weights_only=True)
    assert not torch.equal(final["bn.running_mean"], init["bn.running_mean"])


def test_experiment_cache_resumes_and_changes_nothing(tmp_path, monkeypatch) -> None:
    from experiments.zhang2021 import imp_synthetic

    params = {"N": 200, "levels": 2, "iterations": 30, "n_val": 50}
    plain = imp_synthetic.run_cell(params, 4)
    monkeypatch.setenv("LOTTERY_LAB_IMP_CACHE", str(tmp_path))
    cached = imp_synthetic.run_cell(params, 4)
    assert cached == plain
    assert len(list(tmp_path.glob("imp_*/imp/level_2/record.json"))) == 1
    monkeypatch.setattr(imp_module, "train", lambda *a, **k: pytest.fail("retrained a level"))
    assert imp_synthetic.run_cell(params, 4) == plain  # every level comes from the cache


def test_label_noise_reports_noisy_and_clean_training_accuracy(mnist_dir: Path) -> None:
    splits = vision_splits("mnist", data_dir=mnist_dir, n_val=100, label_noise=0.4)
    config = IMPConfig(levels=0, train=TrainConfig(iterations=60, batch_size=60, eval_every=20))
    (record,) = run_imp(lambda s: build_model("lenet_300_100", seed=s), splits, config,
                        task="classification", device="cpu", progress=False)
    changed = splits.info["noisy_train_mask"]
    p = int(changed.sum()) / changed.numel()
    assert record["train_fraction_noisy"] == pytest.approx(p)
    mixed = p * record["train_metric_noisy"] + (1 - p) * record["train_metric_clean"]
    assert mixed == pytest.approx(record["train_metric_end"], abs=1e-9)
    assert record["train_metric_clean"] > record["train_metric_noisy"]  # it learned true labels
