"""A corpus of distinct bad inputs: each gets its own specific message, and ``medseg check-data`` lists all of them in
one run (table and ``--json``), exiting 1."""

from __future__ import annotations

import gzip
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from medseg import cli
from medseg.data.checks import check_dataset
from medseg.data.discovery import discover
from medseg.data.synthetic import save_nifti
from medseg.workflows.check_data import check_data

AFFINE = np.diag([1.5, 1.5, 2.0, 1.0])
SHAPE = (6, 7, 5)
RGB = np.dtype([("R", "u1"), ("G", "u1"), ("B", "u1")])


def _label(shape=SHAPE, dtype=np.uint8) -> np.ndarray:
    lab = np.zeros(shape, dtype)
    lab[2:4, 2:5, 1:3] = 1
    return lab


def _image(shape=SHAPE, dtype=np.float32) -> np.ndarray:
    return np.random.default_rng(0).normal(size=shape).astype(dtype)


class Corpus:
    """Writes cases into an MSD task and remembers the ``dataset.json`` entries."""

    def __init__(self, root: Path) -> None:
        self.root = root
        (root / "imagesTr").mkdir(parents=True)
        (root / "labelsTr").mkdir()
        self.training: list[dict] = []

    def path(self, cid: str, kind: str, suffix: str = ".nii.gz") -> Path:
        return self.root / ("imagesTr" if kind == "image" else "labelsTr") / f"{cid}{suffix}"

    def add(self, cid, image=None, label=None, image_affine=AFFINE, label_affine=AFFINE, suffix=".nii.gz", entry=None):
        img, lab = self.path(cid, "image", suffix), self.path(cid, "label")
        if image is not None:
            save_nifti(img, image, image_affine)
        if label is not None:
            save_nifti(lab, label, label_affine)
        self.training.append(entry or {"image": f"./{img.relative_to(self.root)}", "label": f"./labelsTr/{lab.name}"})
        return img, lab

    def finish(self) -> Path:
        meta = {"name": "corpus", "modality": {"0": "MRI"}, "labels": {"0": "background", "1": "organ"}}
        (self.root / "dataset.json").write_text(json.dumps({**meta, "training": self.training}))
        return self.root


def _nifti_bytes(data: np.ndarray, suffix: str = ".nii") -> bytes:
    img = nib.Nifti1Image(data, AFFINE)
    img.header["vox_offset"] = 352
    raw = img.header.binaryblock + b"\0" * 4 + data.tobytes(order="F")  # vox_offset 352
    return gzip.compress(raw) if suffix == ".nii.gz" else raw


def _save_sform_only(path: Path, data: np.ndarray, affine: np.ndarray) -> None:
    """Write an affine nibabel would refuse as a qform (singular, NaN) straight into the sform rows."""
    img = nib.Nifti1Image(data, None)
    for i, row in enumerate("xyz"):
        img.header[f"srow_{row}"] = affine[i]
    img.header["sform_code"], img.header["qform_code"] = 1, 0
    nib.save(img, path)


def build_corpus(base: Path) -> tuple[Path, dict[str, str], set[str]]:
    """The corpus dataset, ``{case: expected message part}`` of its errors, and the cases that must pass."""
    c = Corpus(base / "corpus")
    good = _image()
    expected: dict[str, str] = {}

    def bad(cid: str, message: str, **kwargs) -> tuple[Path, Path]:
        expected[cid] = message
        return c.add(cid, **kwargs)

    c.add("good_a", good, _label())
    c.add("good_b", good + 1, _label())
    c.add("good_affine_within_tolerance", good, _label(), label_affine=AFFINE + 1e-5)
    c.add("empty_label", good, np.zeros(SHAPE, np.uint8))  # a warning, not an error
    # unreadable files
    img, _ = bad("garbage_image", "unreadable: not an image file or a damaged header", label=_label())
    img.write_bytes(b"definitely not a NIfTI file " * 20)
    img, _ = bad(
        "truncated_gz_header", "unreadable: truncated file (the compressed data ends", image=good, label=_label()
    )
    img.write_bytes(img.read_bytes()[:100])
    big = _image((16, 16, 16))
    img, _ = bad("truncated_gz_data", "unreadable: truncated file (EOFError", image=big, label=_label((16, 16, 16)))
    img.write_bytes(img.read_bytes()[: len(img.read_bytes()) // 2])
    img, _ = bad(
        "truncated_nii", "truncated file (the header declares 840 bytes", image=good, label=_label(), suffix=".nii"
    )
    img.write_bytes(img.read_bytes()[:600])
    img, _ = bad("absurd_header_dims", "the header declares 32000000000 bytes", label=_label())
    huge = nib.Nifti1Image(np.zeros((2, 2, 2), np.float32), AFFINE)
    huge.header.set_data_shape((2000, 2000, 2000))
    huge.header["vox_offset"] = 352
    img.write_bytes(gzip.compress(huge.header.binaryblock + b"\0" * 4 + b"\0" * 64))
    img, _ = bad("bad_scaling", "unreadable: invalid header fields (HeaderDataError", label=_label(), suffix=".nii")
    header = nib.Nifti1Image(good, AFFINE).header
    header["vox_offset"], header["scl_slope"], header["scl_inter"] = 352, 1.0, np.inf
    img.write_bytes(header.binaryblock + b"\0" * 4 + good.tobytes(order="F"))
    _, lab = bad("corrupt_gzip_label", "unreadable: corrupt compressed data", image=good)
    blob = bytearray(gzip.compress(_nifti_bytes(_label()), compresslevel=1))
    blob[40:60] = b"\xff" * 20
    lab.write_bytes(bytes(blob))
    # missing files / entries
    bad("missing_image", "image file missing", label=_label())
    bad("missing_label", "label file missing", image=good)
    expected["no_label_entry"] = "no label file given"
    c.add("no_label_entry", good, entry={"image": "./imagesTr/no_label_entry.nii.gz"})
    # geometry
    bad("label_shape", "label shape (6, 7, 4) != image shape (6, 7, 5)", image=good, label=_label((6, 7, 4)))
    bad(
        "label_affine",
        "label affine differs from the image affine",
        image=good,
        label=_label(),
        label_affine=np.diag([1.5, 1.5, 3.0, 1.0]),
    )
    four_d = "image has 2 channel(s) (a 4D file: channels in its 4th dimension) but dataset.json names 1: ['MRI']"
    bad("image_4d", four_d, image=np.stack([good, good], -1), label=_label())
    bad(
        "image_2d",
        "expected a 3D image (or 4D with channels last), got shape (6, 7)",
        image=good[..., 0],
        label=_label(),
    )
    bad("label_4d", "expected a 3D label, got shape (6, 7, 5, 1)", image=good, label=_label()[..., None])
    bad(
        "zero_size_axis",
        "empty image axis, shape (6, 0, 5)",
        image=np.zeros((6, 0, 5), np.float32),
        label=_label((6, 0, 5)),
    )
    singular = AFFINE.copy()
    singular[:, 2] = 0.0
    img, lab = bad("singular_affine", "affine (voxel → world) is singular", image=good, label=_label())
    _save_sform_only(img, good, singular)
    _save_sform_only(lab, _label(), singular)
    img, _ = bad("nan_affine", "affine (voxel → world) contains NaN/Inf", image=good, label=_label())
    nan_affine = AFFINE.copy()
    nan_affine[0, 0] = np.nan
    _save_sform_only(img, good, nan_affine)
    # intensities and dtypes
    nan_image = good.copy()
    nan_image[0, 0, 0], nan_image[1, 1, 1] = np.nan, np.inf
    bad("nan_image", "2 NaN/Inf intensities", image=nan_image, label=_label())
    bad("complex_image", "complex-valued voxels (complex64)", image=good.astype(np.complex64), label=_label())
    rgb = np.zeros(SHAPE, RGB)
    bad("rgb_image", "unsupported voxel type [('R', 'u1'), ('G', 'u1'), ('B', 'u1')]", image=rgb, label=_label())
    # label values
    bad(
        "undeclared_label",
        "label values [3] not declared in dataset.json labels [0, 1]",
        image=good,
        label=_label() * 3,
    )
    bad("fractional_label", "label has non-integer values (e.g. 0.5)", image=good, label=_label(dtype=np.float32) * 0.5)
    bad("negative_label", "label has negative values (min -1)", image=good, label=-_label(dtype=np.int16))
    nan_label = _label(dtype=np.float32)
    nan_label[0, 0, 0] = np.nan
    bad("nan_label", "label has 1 NaN/Inf values", image=good, label=nan_label)
    bad("complex_label", "complex-valued voxels (complex64)", image=good, label=_label(dtype=np.complex64))
    # multi-channel cases
    for cid, second, message in (
        ("channel_shape", (_image((6, 7, 4)), AFFINE), "channel shape (6, 7, 4) differs from first channel (6, 7, 5)"),
        ("channel_affine", (good, np.diag([1.0, 1.5, 2.0, 1.0])), "channel affine differs from the first channel"),
    ):
        expected[cid] = message
        save_nifti(c.path(cid, "image"), good, AFFINE)
        save_nifti(c.path(f"{cid}_ch1", "image"), *second)
        save_nifti(c.path(cid, "label"), _label(), AFFINE)
        images = [f"./imagesTr/{cid}.nii.gz", f"./imagesTr/{cid}_ch1.nii.gz"]
        c.training.append({"image": images, "label": f"./labelsTr/{cid}.nii.gz"})
    # dataset.json entries
    (c.root / "imagesTr" / "sub").mkdir()
    save_nifti(c.root / "imagesTr" / "sub" / "good_a.nii.gz", good, AFFINE)
    expected["good_a"] = "duplicate case id (also"
    c.training.append({"image": "./imagesTr/sub/good_a.nii.gz", "label": "./labelsTr/good_a.nii.gz"})
    save_nifti(base / "outside.nii.gz", good, AFFINE)
    expected["outside"] = "image path '../outside.nii.gz' escapes the dataset root"
    c.training.append({"image": "../outside.nii.gz", "label": "./labelsTr/good_a.nii.gz"})
    expected["escape_absolute"] = f"image path '{base / 'escape_absolute.nii.gz'}' escapes the dataset root"
    save_nifti(base / "escape_absolute.nii.gz", good, AFFINE)
    c.training.append({"image": str(base / "escape_absolute.nii.gz"), "label": "./labelsTr/good_a.nii.gz"})
    expected["escape_label"] = "label path '../../etc/passwd' escapes the dataset root"
    save_nifti(c.path("escape_label", "image"), good, AFFINE)
    c.training.append({"image": "./imagesTr/escape_label.nii.gz", "label": "../../etc/passwd"})
    n = len(c.training)
    expected[f"training[{n}]"] = "needs an 'image' entry"
    expected[f"training[{n + 1}]"] = "image path must be a non-empty string, got 42"
    c.training += [{"label": "./labelsTr/good_a.nii.gz"}, {"image": 42}]
    expected["markup_[bold]x"] = "image file missing"
    c.training.append({"image": "./imagesTr/markup_[bold]x.nii.gz", "label": "./labelsTr/good_a.nii.gz"})
    root = c.finish()
    return root, expected, {"good_b", "good_affine_within_tolerance", "empty_label"}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> tuple[Path, dict[str, str], set[str]]:
    return build_corpus(tmp_path_factory.mktemp("reliability"))


def test_corpus_has_at_least_20_distinct_bad_inputs(corpus):
    _, expected, _ = corpus
    assert len(expected) >= 20
    assert len(set(expected.values())) >= 20


def test_every_bad_input_gets_its_specific_message(corpus):
    root, expected, ok = corpus
    infos, problems = check_dataset(discover(root, strict=False))
    errors = [p for p in problems if p.severity == "error"]
    for cid, message in expected.items():
        mine = [p.message for p in errors if p.case == cid]
        assert any(message in m for m in mine), f"{cid}: expected {message!r}, got {mine}"
    assert {p.case for p in errors} == set(expected)  # no false alarms on the good cases
    assert ok <= set(infos)
    assert [(p.case, p.message) for p in problems if p.severity == "warning"] == [
        ("empty_label", "label is empty (no foreground)")
    ]
    for p in errors:  # every problem names a file (or dataset.json for its entries)
        assert p.path.startswith(str(root)), p


def test_check_data_json_lists_every_problem_in_one_run(corpus, capsys, tmp_path):
    root, expected, _ = corpus
    out_file = tmp_path / "report.json"
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["check-data", f"data.root={root}", "--json", "-o", str(out_file)])
    assert exit_info.value.code == 1
    report = json.loads(capsys.readouterr().out)
    assert report == json.loads(out_file.read_text())
    assert report["ok"] is False and report["layout"] == "msd"
    assert report["errors"] == sum(p["severity"] == "error" for p in report["problems"]) >= len(expected)
    assert report["warnings"] == 1
    for cid, message in expected.items():
        assert any(p["case"] == cid and message in p["message"] for p in report["problems"]), cid
    assert set(report["problems"][0]) == {"case", "path", "message", "severity"}


def test_check_data_command_prints_a_table_verbatim(corpus, tmp_path):
    root, expected, _ = corpus
    exe = shutil.which("medseg", path=str(Path(sys.executable).parent))
    cmd = [exe] if exe else [sys.executable, "-c", "from medseg.cli import main; main()"]
    env = {**os.environ, "NO_COLOR": "1", "COLUMNS": "400"}
    proc = subprocess.run(
        [*cmd, "check-data", f"data.root={root}"], capture_output=True, text=True, env=env, timeout=120, cwd=tmp_path
    )
    assert proc.returncode == 1, proc.stderr[-2000:]
    for cid, message in expected.items():
        assert cid in proc.stdout and message.split("(")[0].strip() in proc.stdout, cid
    assert "markup_[bold]x" in proc.stdout  # printed verbatim, not swallowed as rich markup
    assert "error(s), 1 warning(s)" in proc.stdout


def test_check_data_clean_dataset_exits_0(tiny_dataset, capsys):
    cli.main(["check-data", "data=nifti", f"data.root={tiny_dataset}"])  # no SystemExit
    assert "0 error(s), 0 warning(s)" in " ".join(capsys.readouterr().out.split())
    report = check_data(tiny_dataset)
    assert report["ok"] and report["cases"] == report["ok_cases"] == 6 and report["problems"] == []


@pytest.mark.parametrize(
    ("args", "message"),
    [([], "data.root=PATH is required"), (["data.root=/x", "trainer.max_epochs=3"], "unexpected argument")],
)
def test_check_data_usage_errors_exit_2(args, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["check-data", *args])
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


def test_layout_specific_problems(tmp_path):
    """nnU-Net raw: a misnamed image and a label without image are warned about; a malformed labels entry is listed
    with the case problems; folders layout: case.nii next to case.nii.gz is a duplicate id."""
    nn = tmp_path / "Dataset001"
    for sub in ("imagesTr", "labelsTr"):
        (nn / sub).mkdir(parents=True)
    save_nifti(nn / "imagesTr" / "a_0000.nii.gz", _image(), AFFINE)
    save_nifti(nn / "labelsTr" / "a.nii.gz", _label(), AFFINE)
    save_nifti(nn / "imagesTr" / "b.nii.gz", _image(), AFFINE)  # no _0000
    save_nifti(nn / "labelsTr" / "b.nii.gz", _label(), AFFINE)
    (nn / "dataset.json").write_text(json.dumps({"channel_names": {"0": "MRI"}, "labels": {"fg": "one"}}))
    report = check_data(nn)
    found = {(p["case"], p["severity"], p["message"].split(":")[0].split(" (")[0]) for p in report["problems"]}
    assert ("b", "warning", "image file not used") in found
    assert ("b", "warning", "label file without an image in imagesTr") in found
    assert any("label entry 'fg': 'one' is neither" in p["message"] for p in report["problems"])
    assert report["errors"] == 1 and report["ok_cases"] == 1

    folders = tmp_path / "folders"
    (folders / "images").mkdir(parents=True)
    (folders / "labels").mkdir()
    save_nifti(folders / "images" / "c.nii.gz", _image(), AFFINE)
    save_nifti(folders / "images" / "c.nii", _image(), AFFINE)
    save_nifti(folders / "labels" / "c.nii.gz", _label(), AFFINE)
    save_nifti(folders / "labels" / "orphan.nii.gz", _label(), AFFINE)
    report = check_data(folders)
    messages = {(p["case"], p["message"].split(" (")[0]) for p in report["problems"]}
    assert ("c", "duplicate case id") in messages
    assert ("orphan", "label file without an image in images/") in messages


def test_strict_discovery_lists_every_unusable_entry(tmp_path):
    root = tmp_path / "task"
    root.mkdir()
    entries = [{"image": "../a.nii.gz"}, {"image": "/etc/passwd"}, {"label": "x"}, {"image": []}]
    (root / "dataset.json").write_text(json.dumps({"training": entries}))
    from medseg.data.discovery import DatasetError

    with pytest.raises(DatasetError) as err:
        discover(root)
    text = str(err.value)
    assert "4 unusable dataset.json entries" in text
    for part in (
        "'../a.nii.gz' escapes",
        "'/etc/passwd' escapes",
        "needs an 'image' entry",
        "'image' is an empty list",
    ):
        assert part in text
