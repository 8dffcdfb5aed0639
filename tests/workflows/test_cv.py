"""Cross-validation: seeded K-fold splits, user split validation, the cv workflow end to end, resume, aggregation."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from tiny_runs import tiny_train_overrides

from medseg.config import compose_config
from medseg.data.discovery import DatasetError
from medseg.data.splits import kfold_splits, load_or_create_cv_splits, validate_cv_splits
from medseg.run_dir import FAILED, RunDir
from medseg.workflows.cv import aggregate, cross_validate

IDS = [f"case_{i:03d}" for i in range(11)]


def _duplicate_test_case(splits: dict) -> None:
    case = splits["folds"][0]["test"][0]
    fold = splits["folds"][1]
    fold["train"] = [c for c in fold["train"] if c != case]
    fold["val"] = [c for c in fold["val"] if c != case]
    fold["test"].append(case)


def test_kfold_is_deterministic_and_partitions_cases():
    a = kfold_splits(IDS, 3, seed=7, val_fraction=0.25)
    assert a == kfold_splits(list(reversed(IDS)), 3, seed=7, val_fraction=0.25)  # order of discovery is irrelevant
    assert a != kfold_splits(IDS, 3, seed=8, val_fraction=0.25)
    tests = [c for f in a["folds"] for c in f["test"]]
    assert sorted(tests) == IDS  # test folds partition the cases
    assert sorted(len(f["test"]) for f in a["folds"]) == [3, 4, 4]
    for fold in a["folds"]:
        assert not set(fold["val"]) & set(fold["test"])
        assert not set(fold["train"]) & set(fold["test"])
        assert not set(fold["train"]) & set(fold["val"])
        assert sorted(fold["train"] + fold["val"] + fold["test"]) == IDS
        assert fold["val"]


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda s: s["folds"][0]["val"].append(s["folds"][0]["test"][0]), "in both 'val' and 'test'"),
        (lambda s: s["folds"][1]["test"].append("nobody"), "unknown cases ['nobody']"),
        (_duplicate_test_case, "is in the test set of folds 0 and 1"),
        (lambda s: s["folds"][2].pop("val"), "'val' must be a non-empty list"),
        (lambda s: s.pop("folds"), "expected a 'folds' list"),
    ],
)
def test_user_split_validation(tmp_path, mutate, message):
    splits = kfold_splits(IDS, 3, seed=1, val_fraction=0.25)
    mutate(splits)
    path = tmp_path / "my_splits.json"
    path.write_text(json.dumps(splits))
    with pytest.raises(DatasetError, match=message.replace("[", r"\[").replace("]", r"\]").replace("(", r"\(")):
        load_or_create_cv_splits(tmp_path / "run_splits.json", IDS, 3, 1, 0.25, user_file=path)
    assert not (tmp_path / "run_splits.json").exists()


def test_user_split_file_wins_and_is_copied(tmp_path):
    splits = kfold_splits(IDS, 2, seed=3, val_fraction=0.3)
    path = tmp_path / "mine.json"
    path.write_text(json.dumps(splits))
    got = load_or_create_cv_splits(tmp_path / "splits.json", IDS, 5, 99, 0.1, user_file=path)
    assert got == splits
    assert json.loads((tmp_path / "splits.json").read_text()) == splits
    validate_cv_splits(got, IDS, path)


def _overrides(root: Path, epochs: int = 8) -> list[str]:
    return [*tiny_train_overrides(root, epochs, every=2), "cv.folds=2"]


def test_cv_end_to_end_resume_and_aggregate(tmp_path, msd_dataset_factory):
    data = msd_dataset_factory(tmp_path / "data", n_cases=8, fov_mm=48.0, seed=1)
    run = tmp_path / "cv"
    summary = cross_validate(compose_config("cv", _overrides(data), run_dir=run))

    splits = json.loads((run / "splits.json").read_text())
    assert sorted(c for f in splits["folds"] for c in f["test"]) == [f"case_{i:03d}" for i in range(8)]
    for key in ("folds", "per_case", "dice_mean", "dice_std", "dice_case_mean", "dice_case_std", "hd95_mean"):
        assert key in summary
    assert len(summary["per_case"]) == 8 and len(summary["folds"]) == 2
    for k, fold in enumerate(splits["folds"]):
        rows = [r for r in summary["per_case"] if r["fold"] == k]
        assert sorted(r["case"] for r in rows) == sorted(fold["test"])
        for case in fold["test"]:  # predictions overlay the input: same shape and affine
            assert (run / f"fold_{k}" / "predictions" / f"{case}.nii.gz").is_file()
    assert summary["dice_case_mean"] > 0.5, summary["dice_case_mean"]  # trained, not chance
    for name in ("cv_summary.json", "per_case.csv", "per_case_dice.png", "report.md"):
        assert (run / name).stat().st_size > 0

    # resume: fold 0 finished stays untouched; an unfinished fold 1 is trained again from its last.ckpt
    stamp = (run / "fold_0" / "checkpoints" / "last.ckpt").stat().st_mtime_ns
    (run / "fold_1" / "test_metrics.json").unlink()
    RunDir(run / "fold_1").mark(FAILED, error="simulated crash")
    again = cross_validate(compose_config("cv", _overrides(data), run_dir=run))
    assert (run / "fold_0" / "checkpoints" / "last.ckpt").stat().st_mtime_ns == stamp
    assert (run / "fold_1" / "test_metrics.json").is_file()
    assert again["n_cases"] == 8

    # aggregate whatever finished
    (run / "fold_1" / "test_metrics.json").unlink()
    partial = aggregate(run)
    assert partial["n_folds"] == 1 and partial["n_cases"] == len(splits["folds"][0]["test"])


def test_ddp_two_cpu_processes(tmp_path, msd_dataset_factory):
    """``trainer=ddp`` with two gloo processes on the CPU trains and writes one metrics.json."""
    data = msd_dataset_factory(tmp_path / "data", n_cases=6, fov_mm=40.0, seed=2)
    run = tmp_path / "ddp"
    overrides = [o for o in _overrides(data, epochs=2) if not o.startswith("cv.")]
    cmd = [
        sys.executable,
        "-m",
        "medseg.cli",
        "train",
        "trainer=ddp",
        "trainer.accelerator=cpu",
        "trainer.devices=2",
        "trainer.sync_batchnorm=false",
        f"hydra.run.dir={run}",
        *overrides,
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env, cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["epochs"] == 2
    assert "distributed_backend=gloo" in proc.stdout + proc.stderr or "gloo" in (proc.stdout + proc.stderr).lower()


NNUNET = [  # nnU-Net's splits_final.json: a list of {train, val}; its "val" is the held-out fold
    {"train": IDS[4:], "val": IDS[:4]},
    {"train": IDS[:4] + IDS[8:], "val": IDS[4:8]},
    {"train": IDS[:8], "val": IDS[8:]},
]


def test_nnunet_splits_final_is_accepted(tmp_path):
    """Issue 17, item 12: nnU-Net's val fold becomes our test fold; our validation cases come from its train."""
    path = tmp_path / "splits_final.json"
    path.write_text(json.dumps(NNUNET))
    got = load_or_create_cv_splits(tmp_path / "splits.json", IDS, 5, 7, 0.25, user_file=path)
    assert got["n_folds"] == 3 and got["source"] == "nnU-Net"
    for fold, entry in zip(got["folds"], NNUNET, strict=True):
        assert fold["test"] == sorted(entry["val"])
        assert sorted(fold["train"] + fold["val"]) == sorted(entry["train"]) and len(fold["val"]) == 2  # 0.25 × 7|8
        assert not set(fold["val"]) & set(fold["test"])
    assert json.loads((tmp_path / "splits.json").read_text()) == got
    # nnU-Net's protocol: train on its whole train list, validate on the held-out fold
    nn = load_or_create_cv_splits(tmp_path / "nn.json", IDS, 5, 7, 0.25, user_file=path, inner_val=False)
    assert nn["inner_val"] is False
    for fold, entry in zip(nn["folds"], NNUNET, strict=True):
        assert fold["train"] == sorted(entry["train"]) and fold["val"] == fold["test"] == sorted(entry["val"])
    with pytest.raises(DatasetError, match="written with cv.inner_val=false"):
        load_or_create_cv_splits(tmp_path / "other.json", IDS, 5, 7, 0.25, user_file=tmp_path / "nn.json")
    path.write_text(json.dumps([{"train": IDS[1:]}]))
    with pytest.raises(DatasetError, match="nnU-Net fold 0 must be an object with 'train' and 'val'"):
        load_or_create_cv_splits(tmp_path / "bad.json", IDS, 5, 7, 0.25, user_file=path)


def test_inner_val_false_tests_the_final_weights(tmp_path, msd_dataset_factory):
    """cv.inner_val=false: each fold validates on its test fold (nnU-Net) and, selecting nothing on it, tests its
    final weights."""
    data = msd_dataset_factory(tmp_path / "data", n_cases=6, fov_mm=40.0, seed=1)
    ids = [f"case_{i:03d}" for i in range(6)]
    path = tmp_path / "splits_final.json"
    path.write_text(json.dumps([{"train": ids[3:], "val": ids[:3]}, {"train": ids[:3], "val": ids[3:]}]))
    overrides = [*_overrides(data, epochs=2), f"cv.splits_file={path}", "cv.inner_val=false"]
    summary = cross_validate(compose_config("cv", overrides, run_dir=tmp_path / "cv"))
    assert summary["n_cases"] == 6
    for k in range(2):
        metrics = json.loads((tmp_path / "cv" / f"fold_{k}" / "metrics.json").read_text())
        assert metrics["n_train"] == 3 and metrics["n_val"] == 3
        assert sorted(metrics["val_per_case"]) == sorted(ids[3 * k : 3 * k + 3])  # validated on its test fold
        assert metrics["checkpoint_selection"].startswith("final weights (cv.inner_val=false")


# ------------------------------------------------------------------------------------------- launcher presets
@pytest.mark.parametrize(
    ("name", "plugin"),
    [
        ("joblib", "hydra_plugins.hydra_joblib_launcher.config:JobLibLauncherConf"),
        ("submitit_slurm", "hydra_plugins.hydra_submitit_launcher.config:SlurmQueueConf"),
    ],
)
def test_launcher_presets_set_every_key_of_their_plugin(name, plugin, tmp_path):
    """``hydra/launcher=joblib|submitit_slurm`` are medseg presets: the plugin's launcher class and all its keys."""
    import dataclasses
    import importlib

    from hydra import compose, initialize_config_dir

    from medseg.config import config_dir

    module, cls = plugin.split(":")
    schema = getattr(importlib.import_module(module), cls)
    with initialize_config_dir(str(config_dir()), version_base="1.3"):
        cfg = compose("train", [f"hydra/launcher={name}", f"hydra.sweep.dir={tmp_path}"], return_hydra_config=True)
    launcher = cfg.hydra.launcher
    expected = {f.name: f.default for f in dataclasses.fields(schema)}
    assert set(launcher) == set(expected), set(launcher) ^ set(expected)
    assert launcher._target_ == expected["_target_"]
    target_module, target_cls = launcher._target_.rsplit(".", 1)
    assert hasattr(importlib.import_module(target_module), target_cls)


def _loader_in_a_loky_worker(_: int) -> list[list[int]]:
    from torch.utils.data import DataLoader

    from medseg.data.datamodule import worker_context

    loader = DataLoader(list(range(6)), batch_size=2, num_workers=1, multiprocessing_context=worker_context())
    return [b.tolist() for b in loader]


def test_loader_workers_start_inside_joblib_jobs():
    """hydra/launcher=joblib runs each job in a loky process, whose start method torch's workers cannot use
    ("'Process' object has no attribute 'env'"): the data module picks a context that works there."""
    from joblib import Parallel, delayed

    # two jobs: with n_jobs=1 joblib runs the job in this very process, not in a loky worker
    out = Parallel(n_jobs=2, prefer="processes")(delayed(_loader_in_a_loky_worker)(i) for i in range(2))
    assert out == [[[0, 1], [2, 3], [4, 5]]] * 2
