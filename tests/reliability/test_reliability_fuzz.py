"""Fuzzing the loaders and checks: random NIfTI headers and arrays (singular/NaN affines, zero-sized axes, 1D-5D,
unusual dtypes, NaNs, odd scaling), damaged bytes and truncated files. The outcome is always a result or a clear error
that names the file — never another exception."""

from __future__ import annotations

import gzip
import tempfile
import warnings
from pathlib import Path
from unittest import mock

import nibabel as nib
import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from medseg.data import checks
from medseg.data.checks import check_case
from medseg.data.io import read_volume

RGB = np.dtype([("R", "u1"), ("G", "u1"), ("B", "u1")])
FILE_DTYPES = [np.uint8, np.int8, np.int16, np.uint16, np.int32, np.int64, np.float32, np.float64, np.complex64, RGB]
MEMORY_DTYPES = [np.bool_, np.int8, np.uint8, np.int64, np.uint64, np.float16, np.float32, np.complex64, RGB, object]
SPECIAL = [0.0, -0.0, 1.0, -1.0, 1.5, 1e-12, 1e12, np.nan, np.inf, -np.inf]
FUZZ = settings(
    max_examples=200,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

floats = st.one_of(st.sampled_from(SPECIAL), st.floats(-10, 10, allow_nan=False, width=32))
any_shapes = st.lists(st.integers(0, 4), min_size=1, max_size=5).map(tuple)
shapes = st.one_of(st.tuples(*[st.integers(1, 5)] * 3), any_shapes)  # half of them plain 3D volumes
any_affines = st.one_of(
    st.lists(floats, min_size=3, max_size=3).map(lambda z: np.diag([*z, 1.0])),  # incl. zero / NaN spacing
    st.lists(floats, min_size=12, max_size=12).map(lambda v: np.vstack([np.reshape(v, (3, 4)), [0, 0, 0, 1]])),
)


@st.composite
def valid_affines(draw) -> np.ndarray:
    """Permuted, flipped, anisotropic axes with an origin: what scanners write."""
    affine = np.eye(4)
    perm = draw(st.permutations([0, 1, 2]))
    for col, row in enumerate(perm):
        affine[row, col] = draw(st.sampled_from([-1.0, 1.0])) * draw(st.floats(0.3, 5.0))
    affine[:3, 3] = [draw(st.floats(-200, 200)) for _ in range(3)]
    return affine


affines = st.one_of(valid_affines(), any_affines)


def _array(rng: np.random.Generator, shape: tuple, dtype, nan_fraction: float) -> np.ndarray:
    if dtype is object:
        return np.empty(shape, object)
    dtype = np.dtype(dtype)
    if dtype.names:
        return np.zeros(shape, dtype)
    data = rng.normal(0, 50, size=shape)
    if dtype.kind == "c":
        data = data + 1j * rng.normal(size=shape)
    if dtype.kind in "fc" and nan_fraction and data.size:
        data.flat[rng.random(data.size) < nan_fraction] = rng.choice([np.nan, np.inf, -np.inf])
    with np.errstate(invalid="ignore", over="ignore"):
        return data.astype(dtype) if dtype.kind != "b" else data > 0


NUMERIC = [np.uint8, np.int16, np.int32, np.float32, np.float64]
ASPECTS = ("shape", "dtype", "values", "header")


@st.composite
def nifti_files(draw) -> dict:
    """A NIfTI file as bytes, each aspect (shape, dtype, values, header) either plausible (a 3D volume as scanners
    write it) or wild (any shape, dtype incl. complex/RGB, NaN/Inf, header fields nibabel itself would refuse to
    write); then possibly damaged (bytes changed, truncated, garbage, empty). Also a label file on the same grid."""
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    wild = draw(st.sets(st.sampled_from(ASPECTS)))
    shape = draw(any_shapes if "shape" in wild else st.tuples(*[st.integers(1, 5)] * 3))
    dtype = draw(st.sampled_from(FILE_DTYPES if "dtype" in wild else NUMERIC))
    if "values" not in wild and np.dtype(dtype).kind in "iuf" and draw(st.booleans()):  # label-like values
        data = rng.integers(0, 3, shape).astype(dtype)
    else:
        data = _array(rng, shape, dtype, draw(st.sampled_from([0.0, 0.05, 1.0])) if "values" in wild else 0.0)
    img = nib.Nifti1Image(data, None, dtype=dtype if np.dtype(dtype) == np.int64 else None)
    if "header" in wild:
        _wild_header(draw, img.header)
    else:
        img.header.set_sform(draw(valid_affines()), code=1)
        img.header.set_qform(img.header.get_sform(), code=1)
    img.header["vox_offset"] = 352
    label_header = img.header.copy()
    label_header.set_data_dtype(np.uint8)
    label_header["scl_slope"], label_header["scl_inter"] = 1.0, 0.0
    label = rng.integers(0, 2, shape).astype(np.uint8)
    raw = bytearray(img.header.binaryblock + b"\0" * 4 + data.tobytes(order="F"))
    damage = draw(
        st.sampled_from(["none", "none", "none", "header_bytes", "any_bytes", "truncate", "garbage", "empty"])
    )
    if damage == "header_bytes":  # e.g. dims, datatype, vox_offset, magic
        for pos in draw(st.lists(st.integers(0, 347), min_size=1, max_size=8)):
            raw[pos] = draw(st.integers(0, 255))
    elif damage == "any_bytes" and raw:
        for pos in draw(st.lists(st.integers(0, len(raw) - 1), min_size=1, max_size=8)):
            raw[pos] = draw(st.integers(0, 255))
    elif damage == "garbage":
        raw = bytearray(rng.integers(0, 256, draw(st.integers(1, 600)), dtype=np.uint8).tobytes())
    elif damage == "empty":
        raw = bytearray()
    gz = draw(st.booleans())
    blob = gzip.compress(bytes(raw), compresslevel=1) if gz else bytes(raw)
    if damage == "truncate":
        blob = blob[: draw(st.integers(0, max(len(blob) - 1, 0)))]
    return {
        "bytes": blob,
        "suffix": ".nii.gz" if gz else ".nii",
        "label": label_header.binaryblock + b"\0" * 4 + label.tobytes(order="F"),
        "as_label": draw(st.booleans()),
        "damage": damage,
    }


def _wild_header(draw, hdr) -> None:
    """Affine rows, transform codes, pixdims, quaternions and scaling from anything incl. 0, NaN, Inf."""
    affine = draw(affines)
    for i, row in enumerate("xyz"):
        hdr[f"srow_{row}"] = affine[i]
    hdr["sform_code"], hdr["qform_code"] = draw(st.sampled_from([(1, 0), (0, 1), (0, 0), (2, 1)]))
    hdr["pixdim"][1:4] = [draw(floats) for _ in range(3)]
    hdr["quatern_b"], hdr["quatern_c"], hdr["quatern_d"] = (draw(floats) for _ in range(3))
    if draw(st.booleans()):
        hdr["scl_slope"], hdr["scl_inter"] = draw(floats), draw(floats)


@FUZZ
@given(nifti_files())
def test_fuzzed_nifti_gives_a_result_or_a_clear_error(sample):
    with tempfile.TemporaryDirectory() as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore")  # nibabel warns loudly about odd headers; the outcome is what matters
        path = Path(tmp) / f"fuzz{sample['suffix']}"
        path.write_bytes(sample["bytes"])
        try:
            shape, affine, _ = read_volume(path, header_only=True)
        except OSError as err:
            assert str(path) in str(err)
        else:
            assert isinstance(shape, tuple) and affine.shape == (4, 4)
            if int(np.prod(shape, dtype=object)) * 16 < 1 << 20:  # the full read too, when the header is small
                try:
                    read_volume(path)
                except OSError as err:
                    assert str(path) in str(err)
        label = path
        if not sample["as_label"]:
            label = Path(tmp) / "label.nii"
            label.write_bytes(sample["label"])
        info, problems = check_case({"id": "fuzz", "image": [str(path)], "label": str(label)})
        assert all(p.path in (str(path), str(label)) and p.message and p.case == "fuzz" for p in problems)
        errors = [p for p in problems if p.severity == "error"]
        assert (info is None) == bool(errors), problems
        if sample["damage"] in ("garbage", "empty"):
            assert errors
        if info is not None:
            assert len(info.shape) == 3 and np.isfinite(info.spacing).all() and (info.spacing > 0).all()
            assert all(v >= 0 for v in info.label_values)


@st.composite
def volumes(draw) -> tuple:
    """What a reader could return: any shape / affine / dtype (incl. bool, float16, object), NaNs included."""
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    shape = draw(shapes)
    data = _array(rng, shape, draw(st.sampled_from(MEMORY_DTYPES)), draw(st.sampled_from([0.0, 0.1])))
    return shape, draw(affines), data


@settings(max_examples=100, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(volumes(), volumes(), st.booleans())
def test_check_case_accepts_anything_a_reader_returns(image, label, same_geometry):
    if same_geometry:  # most interesting: a label on the image's grid, so that its values get checked
        data = label[2]
        label = (image[0], image[1], np.resize(data, image[0]) if data.size else np.zeros(image[0], data.dtype))
    fake = {"img": image, "lab": label}
    with tempfile.TemporaryDirectory() as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for name in fake:
            (Path(tmp) / name).touch()
        with (
            mock.patch.object(checks, "read_volume", lambda p: fake[Path(p).name]),
            mock.patch.object(checks, "inspect_image", lambda p: None),  # the header guard has its own tests
        ):
            info, problems = check_case({"id": "c", "image": [f"{tmp}/img"], "label": f"{tmp}/lab"})
    errors = [p for p in problems if p.severity == "error"]
    assert (info is None) == bool(errors)
    assert all(p.path in (f"{tmp}/img", f"{tmp}/lab") and p.message for p in problems)
    if np.dtype(image[2].dtype).kind not in "iuf":
        assert any("unsupported dtype" in p.message for p in errors)


# ------------------------------------------------------------------------------- header guard and label values
NIFTI_CODES = [2, 4, 8, 16, 32, 64, 128, 256, 512, 768, 1024, 1280, 1792, 2304]  # incl. complex, RGB, float128


@FUZZ
@given(
    dims=st.lists(st.one_of(st.integers(0, 8), st.integers(2**14, 2**15 - 1)), min_size=1, max_size=7),
    code=st.sampled_from(NIFTI_CODES),
    offset=st.sampled_from([0, 348, 352, 1000, 2**31 - 1]),
    payload=st.integers(0, 4096),
    gz=st.booleans(),
    zooms=st.lists(floats, min_size=7, max_size=7),
)
def test_header_guard_never_allocates_what_the_file_cannot_hold(dims, code, offset, payload, gz, zooms):
    """Any header: ``inspect_image`` returns what the file can really hold and the budget allows, or an
    ``ImageError`` naming the file — never another exception, never a read of the declared size."""
    from medseg.data.io import MAX_EXPANSION, ImageError, inspect_image

    header = nib.Nifti1Header()
    raw = header.binaryblock
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            header.set_data_dtype(code)
            header.set_data_shape(dims)
            header.set_zooms([abs(z) if np.isfinite(z) else 1.0 for z in zooms[: len(dims)]])
            header["vox_offset"] = offset
            raw = header.binaryblock
        except Exception:  # noqa: BLE001 - nibabel refuses some combinations itself: fuzz the raw block then
            raw = raw[:40] + np.asarray([len(dims), *dims, *[1] * (7 - len(dims))], "<i2").tobytes() + raw[56:]
    data = raw + b"\0" * 4 + np.random.default_rng(payload).bytes(payload)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / ("f.nii.gz" if gz else "f.nii")
        path.write_bytes(gzip.compress(data) if gz else data)
        try:
            info = inspect_image(path, budget=2**30)
        except ImageError as err:
            assert str(path) in str(err)
            return
        held = path.stat().st_size
        assert info.declared_bytes <= held * (MAX_EXPANSION if gz else 1)
        assert info.voxels * 4 * 3 <= 2**30


@FUZZ
@given(
    found=st.sets(st.integers(0, 70000), min_size=1, max_size=12),
    declared=st.dictionaries(st.integers(0, 70000), st.text(min_size=1, max_size=5), max_size=8),
)
def test_label_values_map_to_classes_or_are_refused_with_the_values(found, declared):
    from medseg.data.discovery import DatasetError
    from medseg.data.labels import MAX_CLASSES, class_values

    try:
        values = class_values(declared, found)
    except DatasetError as err:
        text = str(err)
        assert ("not 0.." in text and "declare them" in text) or f"more than {MAX_CLASSES}" in text
        return
    assert values[0] == 0 and values == sorted(set(values)) and len(values) <= MAX_CLASSES
    if declared:
        assert set(values) == {0, *declared}
    else:
        assert values == list(range(len(values))) and set(found) <= set(values)


@FUZZ
@given(values=st.sets(st.integers(1, 2000), min_size=1, max_size=6))
def test_remapped_labels_come_back_as_the_files_values(values):
    """Training maps declared values to 0..N−1 (MONAI's MapLabelValued); predictions map them back exactly."""
    from monai.transforms import MapLabelValued

    ordered = [0, *sorted(values)]
    rng = np.random.default_rng(len(ordered))
    label = rng.choice(ordered, size=(4, 5, 6)).astype(np.int32)
    mapped = MapLabelValued("label", ordered, list(range(len(ordered))))({"label": label[None]})["label"][0]
    assert set(np.unique(np.asarray(mapped)).tolist()) <= set(range(len(ordered)))
    lut = np.asarray(ordered, dtype=np.int32)
    assert np.array_equal(lut[np.asarray(mapped).astype(np.int64)], label)
