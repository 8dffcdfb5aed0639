"""Planning inside train / cv and the ``medseg plan`` command: which keys are planned, plan.yaml, overrides win."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import yaml
from omegaconf import OmegaConf

from medseg import cli
from medseg.config import compose_config, override_keys
from medseg.data.synthetic import save_nifti
from medseg.planning import auto
from medseg.planning.auto import compute_plan, enabled, read_plan
from medseg.workflows.cv import cross_validate
from medseg.workflows.train import train

QUICK = [
    "data=nifti",
    "model/net=unet",
    "data.num_workers=0",
    "data.val_fraction=0.34",
    "trainer.max_epochs=1",
    "trainer.check_val_every_n_epoch=1",
    "data.iters_per_epoch=2",
    "plan.time_step=false",
    "callbacks.progress_bar=null",
    "+trainer.enable_progress_bar=false",
]


def aniso_dataset(root: Path, n: int = 4) -> Path:
    """``n`` cases of 48 x 48 x 8 voxels at 0.7 x 0.7 x 4 mm: a flat disc (label 1) in noise."""
    (root / "imagesTr").mkdir(parents=True)
    (root / "labelsTr").mkdir()
    rng = np.random.default_rng(0)
    x, y, z = np.meshgrid(np.arange(48), np.arange(48), np.arange(8), indexing="ij")
    training = []
    for i in range(n):
        label = (((x - 24) ** 2 + (y - 24) ** 2 < 100 + 10 * i) & (abs(z - 4) < 2)).astype(np.uint8)
        image = (label + rng.normal(0, 0.3, label.shape) + 1).astype(np.float32)
        affine = np.diag([0.7, 0.7, 4.0, 1.0])
        save_nifti(root / "imagesTr" / f"c{i}.nii.gz", image, affine)
        save_nifti(root / "labelsTr" / f"c{i}.nii.gz", label, affine)
        training.append({"image": f"./imagesTr/c{i}.nii.gz", "label": f"./labelsTr/c{i}.nii.gz"})
    meta = {"modality": {"0": "T2"}, "labels": {"0": "background", "1": "disc"}, "training": training}
    (root / "dataset.json").write_text(json.dumps(meta))
    return root


def test_override_keys_are_the_keys_set_not_the_groups_chosen():
    got = override_keys(["data=nifti", "model/net=unet", "data.root=/x", "+trainer.foo=1", "~model.net.act", "seed=3"])
    assert got == ["data.root", "trainer.foo"]
    cfg = compose_config("train", ["data=nifti", "data.root=/x", "data.batch_size=3"])
    assert list(cfg.plan.keep) == ["data.root", "data.batch_size"]


@pytest.mark.parametrize(
    ("overrides", "planned"),
    [
        ([], False),  # the demo keeps its recipe
        (["data=nifti", "data.root=/x"], True),
        (["data=nifti", "data.root=/x", "plan.enabled=false"], False),
        (["plan.enabled=true"], True),
    ],
)
def test_planning_is_on_for_your_own_data(overrides, planned):
    assert enabled(compose_config("train", overrides)) is planned
    assert enabled(compose_config("turbolift", overrides)) is (planned and "plan.enabled=true" in overrides)


def test_anisotropic_data_gets_in_plane_kernels_and_no_early_z_pooling(tmp_path):
    cfg = compose_config("train", [*QUICK, f"data.root={aniso_dataset(tmp_path / 'aniso')}"])
    plan, fingerprint = compute_plan(cfg)
    assert fingerprint["median_spacing"] == [0.7, 0.7, 4.0]
    assert plan.values["model.net.strides"][0] == [2, 2, 1]
    assert plan.values["model.net.kernel_sizes"][0] == [3, 3, 1]
    assert plan.values["data.patch_size"] == [48, 48, 8]
    assert plan.trials and all(t["how"] == "meta" for t in plan.trials)


def test_train_plans_writes_plan_yaml_and_keeps_your_keys(tmp_path):
    data = aniso_dataset(tmp_path / "aniso")
    run = tmp_path / "run"
    cfg = compose_config("train", [*QUICK, f"data.root={data}", "data.batch_size=3"], run_dir=run)
    train(cfg)
    saved = OmegaConf.load(run / "config.yaml")
    assert saved.model.net.strides[0] == [2, 2, 1] and saved.model.net.kernel_sizes[0] == [3, 3, 1]
    assert list(saved.data.patch_size) == [48, 48, 8]
    assert saved.data.batch_size == 3 and saved.data.iters_per_epoch == 2 and saved.trainer.max_epochs == 1
    plan = yaml.safe_load((run / "plan.yaml").read_text())
    assert plan["config"]["model"]["net"]["strides"][0] == [2, 2, 1]
    assert plan["config"]["data"]["batch_size"] == 3 and plan["why"]["data.batch_size"].startswith("set by you")
    assert "fingerprint" in plan and plan["why"]["data.spacing"]

    edited = tmp_path / "edited.yaml"  # an edited plan wins over planning
    plan["config"]["data"]["patch_size"] = [32, 32, 8]
    edited.write_text(yaml.safe_dump(plan))
    assert read_plan(edited).values["data.patch_size"] == [32, 32, 8]
    run2 = tmp_path / "run2"
    cfg = compose_config("train", [*QUICK, f"data.root={data}", f"plan.file={edited}"], run_dir=run2)
    train(cfg)
    assert list(OmegaConf.load(run2 / "config.yaml").data.patch_size) == [32, 32, 8]


def test_cv_plans_once_for_every_fold(tmp_path):
    data = aniso_dataset(tmp_path / "aniso", n=4)
    run = tmp_path / "cv"
    overrides = [*QUICK, f"data.root={data}", "cv.folds=2", "data.val_fraction=0.5"]
    # no validation during the one epoch (max_epochs < check_val_every_n_epoch): best.ckpt is the validated last one
    cfg = compose_config("cv", [*overrides, "trainer.check_val_every_n_epoch=5"], run_dir=run)
    cross_validate(cfg)
    assert (run / "fold_0" / "checkpoints" / "best.ckpt").is_file() and (run / "cv_summary.json").is_file()
    assert (run / "plan.yaml").is_file() and not (run / "fold_0" / "plan.yaml").exists()
    for k in (0, 1):
        fold = OmegaConf.load(run / f"fold_{k}" / "config.yaml")
        assert fold.model.net.strides[0] == [2, 2, 1] and fold.plan.enabled is False


def test_the_plan_command_prints_and_writes(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "250")
    data = aniso_dataset(tmp_path / "aniso")
    out = tmp_path / "my_plan.yaml"
    cli.main(["plan", f"data.root={data}", "plan.time_step=false", "model/net=unet", "-o", str(out)])
    text = capsys.readouterr().out
    assert "model.net.kernel_sizes" in text and "in-plane kernels" in text and "fingerprint: 4 cases" in text
    assert read_plan(out).values["model.net.strides"][0] == [2, 2, 1]
    cli.main(["plan", f"data.root={data}", "plan.time_step=false", "data.batch_size=5", "--json"])
    doc = json.loads(capsys.readouterr().out)
    assert "data.batch_size" not in doc["values"] and doc["fingerprint"]["cases"] == 4
    with pytest.raises(SystemExit):
        cli.main(["plan", "model/net=unet"])
    assert "data.root=PATH is required" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"model": {"net": {"_target_": "os.system"}}}, r"keys a plan cannot set: \['model.net._target_'\]"),
        ({"data": {"patch_size": "${oc.env:HOME}"}}, "data.patch_size: a plan value must be a number"),
        ({"data": {"spacing": [1.0, "${now:}", 2.0]}}, "data.spacing: a plan value must be a number"),
        ({"trainer": {"max_epochs": True}}, "trainer.max_epochs: a plan value must be a number"),
    ],
)
def test_a_plan_file_is_data_numbers_for_plannable_keys_only(tmp_path, config, message):
    path = tmp_path / "plan.yaml"
    path.write_text(yaml.safe_dump({"config": config}))
    with pytest.raises(ValueError, match=message):
        read_plan(path)


def test_nothing_is_planned_from_cases_training_would_refuse(tmp_path, capsys):
    data = aniso_dataset(tmp_path / "bad")
    image = tmp_path / "bad" / "imagesTr" / "c1.nii.gz"
    values = np.asarray(nib.load(image).dataobj).copy()
    values[3, 3, 3] = np.nan
    save_nifti(image, values, np.diag([0.7, 0.7, 4.0, 1.0]))
    with pytest.raises(SystemExit) as exit_:
        cli.main(["plan", f"data.root={data}", "plan.time_step=false", "model/net=unet"])
    assert exit_.value.code == 1
    assert f"c1: {image}: 1 NaN/Inf intensities" in capsys.readouterr().err
    run = tmp_path / "run"
    cfg = compose_config("train", [*QUICK, f"data.root={data}"], run_dir=run)
    with pytest.raises(Exception, match="NaN/Inf"):
        train(cfg)
    assert not (run / "plan.yaml").exists()  # a plan of bad data would win over the fixed data's on a re-run


def test_declared_label_values_plan_for_their_classes(tmp_path, monkeypatch):
    data = aniso_dataset(tmp_path / "d")
    for f in (data / "labelsTr").iterdir():  # 0/255 masks, declared so in dataset.json: 2 classes, not 256
        img = nib.load(f)
        save_nifti(f, (np.asarray(img.dataobj) * 255).astype(np.uint8), img.affine)
    meta = json.loads((data / "dataset.json").read_text())
    meta["labels"] = {"0": "background", "255": "disc"}
    (data / "dataset.json").write_text(json.dumps(meta))
    seen = set()
    real = auto.measure

    def measure(net_cfg, in_channels, classes, *args):
        seen.add(classes)
        return real(net_cfg, in_channels, classes, *args)

    monkeypatch.setattr("medseg.planning.auto.measure", measure)
    cfg = compose_config("train", ["data=nifti", f"data.root={data}", "plan.time_step=false", "model/net=unet"])
    compute_plan(cfg)
    assert seen == {2}


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("plan.memory_gb=0", "plan.memory_gb=0: must be a positive number"),
        ("plan.memory_gb=-1", "plan.memory_gb=-1: must be a positive number"),
        ("plan.hours=-2", "plan.hours=-2: must be a positive number"),
        ("plan.iters_per_epoch=0", "plan.iters_per_epoch=0: must be a positive integer"),
        ("plan.max_channels=0", "plan.max_channels=0: must be a positive integer"),
        ("plan.max_depth=1.5", "plan.max_depth=1.5: must be a positive integer"),
    ],
)
def test_plan_settings_are_checked_before_any_case_is_read(tmp_path, capsys, override, message):
    with pytest.raises(SystemExit) as exit_:  # the dataset does not even exist: the settings are refused first
        cli.main(["plan", f"data.root={tmp_path}", "plan.time_step=false", override])
    assert exit_.value.code == 1
    assert message in capsys.readouterr().err


def test_a_budget_nothing_fits_gives_the_smallest_patch_and_says_so(tmp_path):
    data = aniso_dataset(tmp_path / "d")
    cfg = compose_config("train", ["data=nifti", f"data.root={data}", "plan.time_step=false", "plan.memory_gb=1e-6"])
    plan, _ = compute_plan(cfg)  # terminates (it once looped forever) with a network that still pools once
    patch = plan.values["data.patch_size"]
    assert min(patch) >= 8 and len(plan.values["model.net.strides"]) >= 1
    assert any(note.startswith(f"even data.patch_size={patch} at batch 2 takes") for note in plan.notes)


def test_a_plan_made_around_other_values_of_your_keys_is_made_again_until_a_model_trained(tmp_path):
    data = aniso_dataset(tmp_path / "d")
    run = tmp_path / "run"
    bad = compose_config("train", [*QUICK, f"data.root={data}", "data.spacing=[0.02,0.02,0.02]"], run_dir=run)
    with pytest.raises(Exception, match="more than the memory budget"):
        train(bad)  # planned (plan.yaml written around spacing 0.02), then refused
    assert read_plan(run / "plan.yaml").values["data.spacing"] == [0.02, 0.02, 0.02]
    good = compose_config("train", [*QUICK, f"data.root={data}", "data.spacing=[1.4,1.4,4.0]"], run_dir=run)
    train(good)
    plan = read_plan(run / "plan.yaml")  # planned again for the spacing this run trained at
    assert plan.values["data.spacing"] == [1.4, 1.4, 4.0]
    assert list(OmegaConf.load(run / "config.yaml").data.patch_size) == plan.values["data.patch_size"]
    again = compose_config("train", [*QUICK, f"data.root={data}", "data.spacing=[2,2,4]"], run_dir=run)
    with pytest.raises(Exception, match=r"data.spacing: \[1.4, 1.4, 4.0\] → \[2, 2, 4\]"):  # the plan stays
        train(again)
    assert read_plan(run / "plan.yaml").values["data.spacing"] == [1.4, 1.4, 4.0]


def test_cv_checks_its_folds_before_planning_writes_anything(tmp_path, capsys):
    data = aniso_dataset(tmp_path / "d")
    run = tmp_path / "run"
    with pytest.raises(SystemExit) as exit_:
        cli.main(["cv", "data=nifti", f"data.root={data}", "cv.folds=9", f"hydra.run.dir={run}"])
    assert exit_.value.code == 1
    assert "cv.folds=9 needs 2 ≤ folds ≤ number of cases (4)" in capsys.readouterr().err
    assert not (run / "plan.yaml").exists() and not (run / "splits.json").exists()
