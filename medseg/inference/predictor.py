"""Predictor: trained run dir(s) → preprocess like training → sliding window (+TTA, fold ensemble) → input grid.

The output label map has the input's shape and affine exactly. Memory stays bounded on large volumes:

* network space: the mean softmax over runs and mirrors is one (K, *S) buffer, float32 when it fits the memory
  budget, float16 otherwise; the sliding-window logits are stitched slab by slab (``medseg.inference.sliding``) when
  the whole volume's would not fit, with results equal to a whole-volume ``sliding_window_inference``;
* input space: the inverse of crop → resample → reorientation (what MONAI's ``Invertd`` does) is applied a few input
  slices at a time and reduced to labels at once (``medseg.inference.resample``): no full-resolution K-channel array
  exists unless probabilities are asked for (then float16). Unknown transform chains fall back to ``Invertd``, a
  group of channels at a time.
"""

from __future__ import annotations

import copy
import functools
import os
import tempfile
from collections.abc import Hashable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from monai import transforms as T
from monai.data import MetaTensor

from medseg.config import build
from medseg.data.io import ImageError, gib, inspect_image, is_nifti, memory_budget, read_volume, strip_suffix
from medseg.data.transforms import preprocess, preprocess_geometry
from medseg.inference.resample import inverse_map, invert_labels
from medseg.inference.sliding import plan_slabs, predict_slabs, sliding_softmax
from medseg.run_dir import RunDir, RunDirError
from medseg.safe_config import load_run_config

SLAB_AXIS = 0  # slabs along the first spatial axis: each channel's slab is one contiguous block


def as_nifti(path: str, tmp_dir: Path) -> str:
    """``path`` itself if it is NIfTI, else a NIfTI copy (same voxels, RAS affine) in ``tmp_dir``."""
    if is_nifti(path):
        return path
    import nibabel as nib

    _, affine, data = read_volume(path)
    out = tmp_dir / f"{strip_suffix(Path(path).name)}.nii.gz"
    nib.save(nib.Nifti1Image(np.asarray(data), affine), str(out))
    return str(out)


def load_module(run_dir: str | Path, checkpoint: str = "best", trust: bool = False) -> Any:
    """The run's LightningModule (network + sliding-window settings) with the ``checkpoint`` weights, in eval mode
    on the CPU. Refuses untrusted config targets unless ``trust``; a missing, empty, unreadable or mismatched
    checkpoint is one :class:`~medseg.run_dir.RunDirError` naming the file (never another checkpoint instead)."""
    run = RunDir(run_dir)
    cfg = load_run_config(run.config, trust)
    prep = run.preprocessing_info()
    ckpt = run.usable_checkpoint(checkpoint)
    try:
        module = build(cfg.model, roi_size=prep["roi_size"])
    except Exception as err:  # noqa: BLE001 - a damaged config: name it instead of Hydra's traceback
        cause = err.__cause__ or err
        raise RunDirError(f"{run.config}: cannot build the model ({type(cause).__name__}: {cause})") from None
    try:
        module.load_state_dict(read_state_dict(ckpt))
    except RuntimeError as err:  # other layer names or shapes than the network of config.yaml
        first = " ".join(str(err).split())[:300]
        raise RunDirError(f"{ckpt}: does not fit the network of {run.config.name} ({first})") from None
    return module.eval()


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """The ``state_dict`` of a checkpoint, loaded with ``weights_only=True``; one line naming the file otherwise."""
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - truncated, not a checkpoint, pickled code
        raise RunDirError(
            f"{path}: not a readable checkpoint ({type(err).__name__}: {' '.join(str(err).split())[:200]})"
        ) from None
    state = ckpt.get("state_dict") if isinstance(ckpt, dict) else None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise RunDirError(f"{path}: not a medseg checkpoint (no state_dict of tensors)")
    return state


def _nan_to_num(x: Any, value: float) -> Any:
    return torch.nan_to_num(torch.as_tensor(x), nan=value, posinf=value, neginf=value)


def resolve_device(name: str) -> torch.device:
    """``auto`` (CUDA when available, else the CPU), ``cpu``, ``cuda`` or ``cuda:N``; a one-line ``ValueError`` for
    anything else or for a CUDA device this machine does not have."""
    name = str(name).strip().lower()
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ValueError(f"--device {name}: unknown device (use auto, cpu, cuda or cuda:N)") from None
    if device.type == "cpu":
        return device
    if device.type != "cuda":
        raise ValueError(f"--device {name}: unsupported device type {device.type!r} (use auto, cpu, cuda or cuda:N)")
    if not torch.cuda.is_available():
        raise ValueError(f"--device {name}: CUDA is not available on this machine (use --device cpu or auto)")
    if device.index is not None and device.index >= torch.cuda.device_count():
        raise ValueError(f"--device {name}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    return device


def default_memory_budget() -> int:
    """A quarter of the machine's RAM (bytes): the network-space probability buffer may take this much."""
    try:
        return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")) // 4
    except (ValueError, OSError, AttributeError):
        return 4 * 2**30


# ensemble members must agree on these (one network grid, one class ↔ label value map)
GRID_KEYS = ("spacing", "num_classes", "in_channels", "label_values")


def normalisation_key(prep: dict[str, Any]) -> str:
    """What the intensity normalisation of a run depends on: its modality and, for CT, its dataset statistics."""
    import json

    modality = str(prep["modality"])
    stats = prep.get("intensity_stats") if modality == "CT" else None
    return json.dumps({"modality": modality, "stats": stats}, sort_keys=True)


def check_ensemble(preps: Sequence[dict[str, Any]], run_dirs: Sequence[str | Path]) -> None:
    """Members of one ensemble share the network grid (spacing), classes and channels; one line naming the first
    member that differs otherwise (predict such runs separately)."""
    for key in GRID_KEYS:
        first = preps[0].get(key)
        for prep, run in zip(preps[1:], run_dirs[1:], strict=True):
            if prep.get(key) != first:
                raise RunDirError(
                    f"-m: {Path(run)} has {key} {prep[key]} but {Path(run_dirs[0])} has {first}: the members of "
                    "an ensemble must share the spacing, classes, label values and channels (predict them separately)"
                )


class Predictor:
    """Segments volumes with one or more trained runs (softmax averaged over runs, e.g. CV folds).

    Every member normalises the input with its own ``preprocessing.json`` (its modality and, for CT, its own
    training folds' intensity statistics); the geometric preprocessing (resampling, cropping) is done once, and
    members with the same normalisation share one normalised volume. Members must share the spacing, the classes and
    the channels (:func:`check_ensemble`).

    Args:
        run_dirs: run directories written by ``medseg train`` (config.yaml, preprocessing.json, checkpoints/).
        device: torch device of the network.
        checkpoint: ``best`` or ``last``.
        tta: mirror test-time augmentation (flip along each spatial axis the network sees: the three axes of a 3D
            network, the two in-plane axes of a 2D one; averaged).
        trust: allow config targets outside medseg/monai/torch/lightning.
        memory_budget: bytes the network-space probabilities may take in float32 before float16 is used instead;
            the stitched logits of one slab take at most half of it. None: a quarter of the RAM.
        invert: ``auto`` (bounded-memory inversion; MONAI ``Invertd`` for transform chains it does not know) or
            ``monai`` (always ``Invertd``, a group of channels at a time — the reference the tests compare with).
        replace_nonfinite: replace NaN/Inf input voxels by this value (an explicit opt-in); None refuses such inputs.
    """

    def __init__(
        self,
        run_dirs: Sequence[str | Path],
        device: str = "cpu",
        checkpoint: str = "best",
        tta: bool = False,
        trust: bool = False,
        memory_budget: int | None = None,
        invert: str = "auto",
        replace_nonfinite: float | None = None,
    ) -> None:
        if not run_dirs:
            raise ValueError("no run directory given")
        if invert not in ("auto", "monai"):
            raise ValueError(f"invert must be 'auto' or 'monai', got {invert!r}")
        self.device, self.tta, self.invert = resolve_device(device), tta, invert
        self.memory_budget = int(memory_budget or default_memory_budget())
        self.modules = [self._load(Path(r), checkpoint, trust) for r in run_dirs]
        preps = [RunDir(r).preprocessing_info() for r in run_dirs]
        check_ensemble(preps, run_dirs)
        prep = preps[0]
        self.num_classes = int(prep["num_classes"])
        self.in_channels = int(prep.get("in_channels") or 1)
        self.spacing = [float(s) for s in prep["spacing"]]
        values = [int(v) for v in prep.get("label_values") or range(self.num_classes)]
        self.label_dtype = np.uint8 if self.num_classes <= 256 else np.uint16
        out_dtype = np.uint8 if max(values) < 256 else np.uint16 if max(values) < 65536 else np.int32
        # class index → the value the label files use (identity unless dataset.json maps e.g. 255 → class 1)
        self.label_lut = None if values == list(range(self.num_classes)) else np.asarray(values, dtype=out_dtype)
        # geometry once for all members; the intensity normalisation per member, shared where the settings agree
        steps = preprocess_geometry(prep["spacing"], keys=("image",))
        self.replace_nonfinite = replace_nonfinite
        if replace_nonfinite is not None:  # right after loading, before anything computes with the values
            steps.insert(1, T.Lambdad("image", functools.partial(_nan_to_num, value=float(replace_nonfinite))))
        self.pre = T.Compose(steps)
        self.norms: dict[str, Any] = {}
        self.member_norm: list[str] = []
        for p in preps:
            key = normalisation_key(p)
            if key not in self.norms:
                self.norms[key] = preprocess(p["spacing"], p["modality"], p.get("intensity_stats"), keys=("image",))[-1]
            self.member_norm.append(key)
        for t in self.pre.transforms:
            if isinstance(t, T.Spacingd):  # resample in float32: MONAI's float64 default doubles the input copy and
                t.dtype = (np.float32,) * len(t.keys)  # the sampling grid (differences ~1e-7, far below any effect)

    def _load(self, run_dir: Path, checkpoint: str, trust: bool) -> Any:
        return load_module(run_dir, checkpoint, trust).to(self.device)

    def _flips(self, module: Any) -> list[tuple[int, ...]]:
        """Mirrors of a (1, C, H, W, D) volume: every spatial axis for a 3D network; only the in-plane H and W for a
        2D one (it sees (H, W) slices: flipping D would repeat the unflipped pass)."""
        if not self.tta:
            return [()]
        return [(), (2,), (3,)] if getattr(module, "is_2d", False) else [(), (2,), (3,), (4,)]

    def normalised(self, image: torch.Tensor, key: str) -> torch.Tensor:
        """``image`` (1, C, *S) after the intensity normalisation ``key`` (one of :attr:`norms`)."""
        out = self.norms[key]({"image": image[0]})["image"]  # (C, *S)
        out = out.as_tensor() if isinstance(out, MetaTensor) else torch.as_tensor(out)
        return out[None].float()

    def _slabs(self, module: Any, shape: Sequence[int]) -> list[Any]:
        per_voxel = (self.num_classes + 1) * 4  # float32 logits + count map
        budget = self.memory_budget // 2
        if self.device.type == "cuda":
            budget = min(budget, torch.cuda.mem_get_info(self.device)[0] // 4)
        plane = int(np.prod(shape)) // shape[SLAB_AXIS]
        max_len = max(1, budget // (per_voxel * plane))
        roi = int(module.roi_size[SLAB_AXIS])
        return plan_slabs(int(shape[SLAB_AXIS]), roi, float(module.overlap), max_len)

    @torch.no_grad()
    def probabilities(self, image: torch.Tensor) -> torch.Tensor:
        """Mean softmax over runs (and mirrors with TTA) of a (1, C, *S) volume after the geometric preprocessing
        (:attr:`pre`), each run on its own normalisation of it: (K, *S) on the CPU, float32 if it fits
        ``memory_budget``, else float16."""
        shape = tuple(image.shape[2:])
        passes = sum(len(self._flips(m)) for m in self.modules)
        fits = self.num_classes * int(np.prod(shape)) * 4 <= self.memory_budget
        dtype = torch.float32 if fits else torch.float16
        total: torch.Tensor | None = None
        first = True
        for key in self.norms:  # members sharing a normalisation share one normalised volume
            x_norm = self.normalised(image, key).to(self.device)  # (1, C, *S)
            members = [m for m, k in zip(self.modules, self.member_norm, strict=True) if k == key]
            total, first = self._accumulate(members, x_norm, shape, passes, fits, dtype, total, first)
            del x_norm
        assert total is not None
        return total

    def _accumulate(
        self,
        members: list[Any],
        image: torch.Tensor,
        shape: tuple[int, ...],
        passes: int,
        fits: bool,
        dtype: torch.dtype,
        total: torch.Tensor | None,
        first: bool,
    ) -> tuple[torch.Tensor | None, bool]:
        """Add each member's (mirrored) softmax of the normalised ``image``, divided by ``passes``, into ``total``."""
        for module in members:
            slabs = self._slabs(module, shape)
            for dims in self._flips(module):

                def consume(region: slice, p: torch.Tensor, dims: tuple[int, ...] = dims, first: bool = first) -> None:
                    nonlocal total
                    p = (torch.flip(p, dims) if dims else p)[0].to("cpu", torch.float32)
                    if passes == 1 and fits and region == slice(0, shape[SLAB_AXIS]):
                        total = p  # one pass, one slab: the stitched volume itself, no copy
                        return
                    if 2 in dims:  # the slab axis is mirrored: the region counts from the other end
                        region = slice(shape[SLAB_AXIS] - region.stop, shape[SLAB_AXIS] - region.start)
                    if total is None:
                        total = torch.empty(self.num_classes, *shape, dtype=dtype)
                    if passes > 1:
                        p /= passes
                    if first:
                        total[:, region].copy_(p)
                    else:
                        total[:, region] += p

                x = torch.flip(image, dims) if dims else image
                predict_slabs(functools.partial(sliding_softmax, module), x, SLAB_AXIS, slabs, consume)
                first = False
                del x
        return total, first

    def predict(self, image_paths: list[str], probabilities: bool = False) -> tuple[np.ndarray, np.ndarray | None]:
        """Label map (uint8/uint16) on the grid of the first input file, and — with ``probabilities`` — the class
        probabilities on that grid (float16, (K, *shape)); else None.

        NRRD/MHA/MHD inputs are converted to a temporary NIfTI (RAS affine from the ITK header) first.
        """
        self.check_inputs(image_paths)
        with tempfile.TemporaryDirectory(prefix="medseg-") as tmp:
            paths = [as_nifti(p, Path(tmp)) for p in image_paths]
            try:
                data = self.pre({"image": paths})
            except Exception as err:  # MONAI wraps reader errors; report the root cause with the file name
                cause: BaseException = err
                while cause.__cause__ is not None:
                    cause = cause.__cause__
                raise ValueError(f"{image_paths[0]}: cannot load ({type(cause).__name__}: {cause})") from err
        self.check_loaded(data["image"], image_paths)
        labels, probs = self._predict_loaded(data, probabilities)
        return (labels if self.label_lut is None else self.label_lut[labels]), probs

    def check_inputs(self, image_paths: Sequence[str]) -> None:
        """Refuse, by file name and before anything is allocated, inputs that cannot be read, hold complex or
        vector voxels, declare more data than the file holds, or would not fit the memory budget once resampled."""
        infos = [inspect_image(p) for p in image_paths]
        ref = infos[0]
        channels = sum(int(i.shape[3]) if len(i.shape) == 4 else 1 for i in infos)
        if channels != self.in_channels:
            where = " (a 4D image: channels in its 4th dimension)" if len(ref.shape) == 4 else ""
            raise ImageError(
                f"{ref.path}: {channels} image channel(s){where}, but the model was trained on {self.in_channels}"
            )
        for info in infos[1:]:
            if info.shape[:3] != ref.shape[:3]:
                raise ImageError(f"{info.path}: channel shape {info.shape} differs from {ref.path.name} {ref.shape}")
        volume = float(np.prod(ref.shape[:3], dtype=np.float64) * np.prod(ref.spacing))  # mm³
        resampled = volume / float(np.prod(self.spacing))
        need = resampled * 4 * (len(infos) + 3)  # the channels in float32 plus the resampling's working copies
        if need > memory_budget():
            raise ImageError(
                f"{ref.path}: resampled to the run's spacing {self.spacing} mm it has {resampled:.3g} voxels "
                f"(about {gib(need)}), more than the memory budget of {gib(memory_budget())} (MEDSEG_MEMORY_GB)"
            )

    def check_loaded(self, image: torch.Tensor, image_paths: Sequence[str]) -> None:
        """A preprocessed volume holds finite values and some non-zero voxels; else one line naming the file."""
        if any(int(s) == 0 for s in image.shape[1:]):
            raise ValueError(f"{image_paths[0]}: every voxel is 0 (an empty image): nothing to segment")
        if not bool(torch.isfinite(image).all()):
            counts = []
            for path in image_paths:
                raw = np.asarray(read_volume(path)[2])
                n = int(raw.size - np.isfinite(raw).sum())
                if n:
                    counts.append(f"{path}: {n} NaN/Inf voxels")
            what = "; ".join(counts) or f"{image_paths[0]}: the intensities normalise to NaN/Inf"
            raise ValueError(f"{what}; refusing to predict (--replace-nonfinite VALUE replaces them explicitly)")

    def _predict_loaded(self, data: Any, with_probs: bool = False) -> tuple[np.ndarray, np.ndarray | None]:
        image = data["image"]  # MetaTensor (C, *S) in the network's space
        mapping = inverse_map(image) if self.invert == "auto" else None
        probs = self.probabilities(image.as_tensor()[None].float())  # (K, *S)
        if mapping is not None:
            del image
            data.pop("image")  # the inversion needs only the map: free the network-space image first
            return invert_labels(probs, mapping, self.label_dtype, with_probs)
        return self._invert_monai(data, probs, with_probs)

    def _invert_monai(self, data: Any, probs: torch.Tensor, with_probs: bool) -> tuple[np.ndarray, np.ndarray | None]:
        """MONAI ``Invertd`` on groups of channels (as many as fit the budget in float64), running argmax."""
        image = data["image"]
        shape = tuple(int(s) for s in np.asarray(image.meta["spatial_shape"]).reshape(-1)[:3])
        per_channel = int(np.prod(shape)) * 8 * 2  # float64 resampling output + its float32/transposed copies
        group = max(1, min(self.num_classes, self.memory_budget // per_channel))
        best = labels = None
        out = np.zeros((self.num_classes, *shape), np.float16) if with_probs else None
        for c0 in range(0, self.num_classes, group):
            pred = MetaTensor(probs[c0 : c0 + group].float(), meta=image.meta)
            pred.applied_operations = copy.deepcopy(image.applied_operations)
            item: dict[Hashable, Any] = {"image": image, "pred": pred}
            inv = T.Invertd("pred", self.pre, orig_keys="image", nearest_interp=False)(item)["pred"]
            inv = inv.as_tensor() if isinstance(inv, MetaTensor) else torch.as_tensor(inv)
            index = inv.argmax(0)  # the first maximum, like a single argmax over all channels
            value = inv.gather(0, index[None])[0]
            if best is None or labels is None:
                best, labels = value, index
            else:
                better = value > best  # strict: ties keep the lower class, like argmax
                best, labels = torch.where(better, value, best), torch.where(better, index + c0, labels)
            if out is not None:
                out[c0 : c0 + group] = inv.numpy().astype(np.float16)
        assert labels is not None
        return labels.numpy().astype(self.label_dtype), out
