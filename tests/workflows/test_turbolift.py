"""Turbolift: fold k of stage s starts exactly from fold k of stage s-1; head mismatches; resume; summary."""

import json
from pathlib import Path

import pytest
import torch

from medseg.config import build, compose_config
from medseg.training.transfer import init_from_checkpoint, weights_hash
from medseg.workflows.turbolift import turbolift


def _overrides(stage_roots: list[Path]) -> list[str]:
    stages = ",".join(
        f"{{name:s{i},cv:{'false' if i == 0 else 'true'},data:{{root:'{root}',generate:null}},overrides:[]}}"
        for i, root in enumerate(stage_roots)
    )
    return [
        "data=nifti",
        "data/augment=light",
        "data.root=unused",
        "model/net=unet",
        "model.net.spatial_dims=3",
        "model.net.channels=[8,16,32]",
        "model.net.up_channels=null",
        "model.sw_batch_size=4",
        "data.patch_size=[16,16,16]",
        "data.spacing=[2.0,2.0,2.0]",
        "data.batch_size=2",
        "data.samples_per_volume=1",
        "data.val_fraction=0.34",
        "data.num_workers=0",
        "trainer.max_epochs=2",
        "trainer.check_val_every_n_epoch=1",
        "callbacks.progress_bar=null",
        "+trainer.enable_progress_bar=false",
        "cv.folds=2",
        f"stages=[{stages}]",
    ]


def _state(ckpt: Path) -> dict:
    return torch.load(ckpt, map_location="cpu", weights_only=True)["state_dict"]


def test_turbolift_chain_fold_by_fold_and_resume(tmp_path, msd_dataset_factory):
    """Three stages whose case ids (case_000...) name the same patients: stage 0 (cv: false) trains one model per fold,
    each without that fold's later test patients; fold k of stage s starts from fold k of stage s-1; the reverse
    chain runs s1 → s0 → s2; the leakage audit of every chain is clean."""
    roots = [msd_dataset_factory(tmp_path / f"d{i}", n_cases=n, fov_mm=40.0, seed=i) for i, n in enumerate([5, 6, 6])]
    run = tmp_path / "tl"
    summary = turbolift(compose_config("turbolift", _overrides(roots), run_dir=run))

    assert [s["name"] for s in summary["stages"]] == ["s0", "s1", "s2"]
    assert [s["mode"] for s in summary["stages"]] == ["per_fold", "cv", "cv"]
    assert summary["final_stage_dir"] == "stage_2_s2"
    assert set(summary["methods"]) == {"turbolift", "scratch", "direct", "reverse"}
    for method in ("scratch", "direct", "reverse"):
        row = summary["methods"][method]
        assert 0 <= row["wilcoxon_p"] <= 1 and 0 <= row["mannwhitney_p"] <= 1 and len(row["ci95"]) == 2
        assert row["n"] == 6 and any("unreliable" in n for n in row["notes"])  # 6 < 10 cases
    assert (run / "turbolift_summary.json").is_file() and (run / "turbolift_methods.png").stat().st_size > 0

    # the audit: every fold of every CV stage of every chain, test patients vs all ancestors — empty
    audit = summary["leakage_audit"]
    assert audit["clean"] and audit["leaks"] == 0 and set(audit["chains"]) == set(summary["methods"])
    assert len(audit["chains"]["turbolift"]) == 4 and len(audit["chains"]["reverse"]) == 4  # 2 CV stages × 2 folds
    final = [r for r in audit["chains"]["turbolift"] if r["stage"] == "stage_2_s2"]
    assert [a["model"] for a in final[0]["ancestors"]] == ["stage_0_s0/fold_0", "stage_1_s1/fold_0"]
    splits = json.loads((run / "stage_2_s2" / "splits.json").read_text())
    for k in range(2):
        test = set(splits["folds"][k]["test"])
        s0 = json.loads((run / "stage_0_s0" / f"fold_{k}" / "splits.json").read_text())
        assert not test & set(s0["train"] + s0["val"])  # the stage-0 model of fold k never saw fold k's patients
        s1 = json.loads((run / "stage_1_s1" / "splits.json").read_text())["folds"][k]
        assert test <= set(s1["test"])  # the same patients are tested in fold k at stage 1

    # fold k of stage s starts from fold k of stage s-1 (exact weights)
    for k in range(2):
        s1 = json.loads((run / "stage_1_s1" / f"fold_{k}" / "init_from.json").read_text())
        assert Path(s1["checkpoint"]) == run / "stage_0_s0" / f"fold_{k}" / "checkpoints" / "best.ckpt"
        s2 = json.loads((run / "stage_2_s2" / f"fold_{k}" / "init_from.json").read_text())
        source = run / "stage_1_s1" / f"fold_{k}" / "checkpoints" / "best.ckpt"
        assert Path(s2["checkpoint"]) == source
        assert s2["skipped"] == []
        assert s2["sha256"] == s2["sha256_after_load"] == weights_hash(_state(source))
        direct = json.loads((run / "baseline_direct" / f"fold_{k}" / "init_from.json").read_text())
        assert Path(direct["checkpoint"]) == run / "stage_0_s0" / f"fold_{k}" / "checkpoints" / "best.ckpt"
        chain = run / "baseline_reverse" / "chain"
        rev0 = chain / "stage_0_s1" / f"fold_{k}"
        assert not (rev0 / "init_from.json").exists()  # the reverse chain starts from scratch on s1
        rev1 = json.loads((chain / "stage_1_s0" / f"fold_{k}" / "init_from.json").read_text())
        assert Path(rev1["checkpoint"]) == rev0 / "checkpoints" / "best.ckpt"
        rev = json.loads((run / "baseline_reverse" / f"fold_{k}" / "init_from.json").read_text())
        assert Path(rev["checkpoint"]) == chain / "stage_1_s0" / f"fold_{k}" / "checkpoints" / "best.ckpt"
        assert not (run / "baseline_scratch" / f"fold_{k}" / "init_from.json").exists()
        metrics = json.loads((run / "stage_2_s2" / f"fold_{k}" / "metrics.json").read_text())
        assert metrics["init_from"]["sha256"] == s2["sha256"]
    # every baseline uses the final stage's folds
    for method in ("scratch", "direct", "reverse"):
        assert json.loads((run / f"baseline_{method}" / "splits.json").read_text()) == splits

    # resume: nothing finished is trained again
    stamps = {p: p.stat().st_mtime_ns for p in run.rglob("last.ckpt")}
    again = turbolift(compose_config("turbolift", _overrides(roots), run_dir=run))
    assert {p: p.stat().st_mtime_ns for p in run.rglob("last.ckpt")} == stamps
    assert again["methods"]["turbolift"]["dice_mean"] == pytest.approx(summary["methods"]["turbolift"]["dice_mean"])


def test_turbolift_refuses_settings_that_would_leak(tmp_path):
    cfg = compose_config("turbolift", ["cv.inner_val=false"], run_dir=tmp_path / "a")
    with pytest.raises(ValueError, match="cv.inner_val=false is refused"):
        turbolift(cfg)
    cfg = compose_config("turbolift", [f"cv.splits_file={tmp_path / 'x.json'}"], run_dir=tmp_path / "b")
    with pytest.raises(ValueError, match="cv.splits_file is not used by turbolift"):
        turbolift(cfg)


def test_head_mismatch_loads_the_rest_and_lists_skipped(tmp_path):
    def module(classes: int):
        cfg = compose_config(
            "train",
            ["model/net=unet", "model.net.channels=[4,8]", f"data.num_classes={classes}", "data.in_channels=1"],
        )
        return build(cfg.model, roi_size=[16, 16, 16])

    source = module(3)
    ckpt = tmp_path / "src.ckpt"
    torch.save({"state_dict": source.state_dict()}, ckpt)
    target = module(2)
    info = init_from_checkpoint(target, ckpt)
    assert info["skipped"] == ["net.head.bias", "net.head.weight"]
    assert info["sha256"] == info["sha256_after_load"]
    src, dst = source.state_dict(), target.state_dict()
    for key in dst:
        if not key.startswith("net.head"):
            assert torch.equal(src[key], dst[key]), key
    with pytest.raises(ValueError, match="init_strict=false"):
        init_from_checkpoint(module(3), _renamed(source, tmp_path))


def _renamed(source, tmp_path) -> Path:
    state = {k.replace("net.encoders", "net.other"): v for k, v in source.state_dict().items()}
    path = tmp_path / "renamed.ckpt"
    torch.save({"state_dict": state}, path)
    return path


def test_study_config_and_larger_generated_stage(tmp_path):
    """The power study composes as documented, and ``turbolift:<stage>:<cases>`` draws more cases from the same
    seeded stream: its first cases are the demo's."""
    import nibabel as nib

    from medseg.data.datamodule import generate_dataset

    cfg = compose_config("turbolift_study")
    assert cfg.cv.folds == 5 and [s.name for s in cfg.stages] == ["ct", "cbct", "cbct_tst"]
    assert cfg.stages[2].data.generate == "turbolift:cbct_tst:220" and not cfg.baselines.reverse
    generate_dataset("turbolift:cbct_tst:3", tmp_path / "three")
    generate_dataset("turbolift:cbct_tst:2", tmp_path / "two")
    assert len(json.loads((tmp_path / "three" / "dataset.json").read_text())["training"]) == 3
    for i in range(2):
        name = f"imagesTr/cbct_tst_{i:03d}.nii.gz"
        a, b = nib.load(tmp_path / "three" / name), nib.load(tmp_path / "two" / name)
        assert (a.get_fdata() == b.get_fdata()).all()
