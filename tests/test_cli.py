import pytest

from medseg import cli


def test_help_lists_commands(capsys):
    cli.main(["--help"])
    out = capsys.readouterr().out
    assert "usage: medseg <command>" in out and "train" in out


def test_unknown_command_exits_2_with_usage_verbatim(capsys):
    with pytest.raises(SystemExit) as err:
        cli.main(["frobnicate"])
    assert err.value.code == 2
    text = " ".join(capsys.readouterr().err.split())
    assert "frobnicate" in text
    # the usage text has literal brackets; printed through rich markup unescaped, they vanish
    assert "usage: medseg <command> [options] [key=value ...]" in text, text


def test_errors_read_as_file_and_reason_not_errno():
    from medseg.cli._output import describe

    assert describe(FileNotFoundError(2, "No such file or directory", "/data/x.nii.gz")) == (
        "/data/x.nii.gz: No such file or directory"
    )
    assert describe(FileExistsError(17, "File exists", "a", None, "b")) == "a: File exists (and b)"
    assert describe(ValueError("plain message")) == "plain message"


def test_long_messages_stay_one_line_when_not_a_terminal(capsys):
    from medseg.cli._output import fail

    long = "x" * 300 + " /a/very/long/path/" + "y" * 200
    assert fail("predict", long) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and long in err  # rich would hard-wrap at 80 columns in a log file


def test_device_auto_and_ddp_nodes():
    import torch

    from medseg.config import compose_config
    from medseg.inference.predictor import resolve_device

    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    assert resolve_device("CPU").type == "cpu"
    cfg = compose_config("train", ["trainer=ddp", "trainer.num_nodes=2"])
    assert cfg.trainer.num_nodes == 2 and cfg.trainer.strategy == "ddp"


def test_saved_configs_hold_absolute_expanded_paths(tmp_path, monkeypatch):
    """A notebook or another tool reading config.yaml does not expand ``~`` or know the working directory."""
    from medseg.config import absolute_paths, compose_config

    monkeypatch.delenv("MEDSEG_CACHE", raising=False)
    monkeypatch.chdir(tmp_path)
    cfg = compose_config("train", ["data=nifti", "data.root=rel/data", "init_from='~/ckpt/best.ckpt'"])
    absolute_paths(cfg)
    assert cfg.data.root == str(tmp_path / "rel" / "data")
    assert cfg.init_from.startswith("/") and "~" not in cfg.init_from
    assert cfg.paths.cache_dir.startswith("/") and "~" not in cfg.data.cache_dir


def test_a_summary_names_only_the_files_the_run_directory_holds(tmp_path):
    from medseg.run_dir import contents

    assert "plan.yaml" in contents("train")  # the help text lists everything a run can hold
    (tmp_path / "config.yaml").write_text("{}")
    (tmp_path / "checkpoints").mkdir()
    assert contents("train", tmp_path) == "config.yaml, checkpoints/"  # an unplanned run: no plan.yaml
    (tmp_path / "fold_0").mkdir()
    (tmp_path / "cv_summary.json").write_text("{}")
    assert contents("cv", tmp_path) == "fold_<k>/, cv_summary.json"
