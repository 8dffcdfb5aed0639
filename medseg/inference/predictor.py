"""Predictor: a trained run dir → preprocess like training → sliding window → invert to the input's grid.

The output label map has the input's shape and affine exactly: MONAI's ``Invertd`` undoes cropping, resampling and
reorientation of the softmax probabilities (linear interpolation) before the argmax.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from monai import transforms as T
from monai.data import MetaTensor
from omegaconf import OmegaConf

from medseg.config import build, check_targets
from medseg.data.io import NIFTI_SUFFIXES, read_volume, strip_suffix
from medseg.data.transforms import preprocess


def as_nifti(path: str, tmp_dir: Path) -> str:
    """``path`` itself if it is NIfTI, else a NIfTI copy (same voxels, RAS affine) in ``tmp_dir``."""
    if path.endswith(NIFTI_SUFFIXES):
        return path
    import nibabel as nib

    _, affine, data = read_volume(path)
    out = tmp_dir / f"{strip_suffix(Path(path).name)}.nii.gz"
    nib.save(nib.Nifti1Image(np.asarray(data), affine), str(out))
    return str(out)


class Predictor:
    """Segments volumes with one or more trained runs (softmax averaged over runs, e.g. CV folds).

    Args:
        run_dirs: run directories written by ``medseg train`` (config.yaml, preprocessing.json, checkpoints/).
        device: torch device.
        checkpoint: ``best`` or ``last``.
        tta: mirror test-time augmentation (flip along each spatial axis, averaged).
        trust: allow config targets outside medseg/monai/torch/lightning.
    """

    def __init__(
        self,
        run_dirs: Sequence[str | Path],
        device: str = "cpu",
        checkpoint: str = "best",
        tta: bool = False,
        trust: bool = False,
    ) -> None:
        if not run_dirs:
            raise ValueError("no run directory given")
        self.device, self.tta = torch.device(device), tta
        self.modules = [self._load(Path(r), checkpoint, trust) for r in run_dirs]
        prep = json.loads((Path(run_dirs[0]) / "preprocessing.json").read_text())
        self.num_classes = int(prep["num_classes"])
        self.pre = T.Compose(
            preprocess(prep["spacing"], prep["modality"], prep.get("intensity_stats"), keys=("image",))
        )

    def _load(self, run_dir: Path, checkpoint: str, trust: bool) -> Any:
        cfg = OmegaConf.load(run_dir / "config.yaml")
        if not trust:
            check_targets(cfg, run_dir / "config.yaml")
        prep = json.loads((run_dir / "preprocessing.json").read_text())
        module = build(cfg.model, roi_size=prep["roi_size"])
        ckpt = run_dir / "checkpoints" / f"{checkpoint}.ckpt"
        if not ckpt.is_file():
            ckpt = run_dir / "checkpoints" / "last.ckpt"
        state = torch.load(ckpt, map_location="cpu", weights_only=True)["state_dict"]
        module.load_state_dict(state)
        return module.to(self.device).eval()

    @torch.no_grad()
    def probabilities(self, image: torch.Tensor) -> torch.Tensor:
        """Mean softmax over runs (and mirrors with TTA) of a preprocessed (1, C, H, W, D) volume."""
        image = image.to(self.device)
        flips: list[tuple[int, ...]] = [()]
        if self.tta:
            flips += [(2,), (3,), (4,)]
        total = torch.zeros(1, self.num_classes, *image.shape[2:], device=self.device)
        for module in self.modules:
            for dims in flips:
                x = torch.flip(image, dims) if dims else image
                p = module.predict_volume(x)
                total += torch.flip(p, dims) if dims else p
        return total / (len(self.modules) * len(flips))

    def predict(self, image_paths: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """Label map (uint8/uint16) on the grid of the first input file, and the probabilities on that grid.

        NRRD/MHA/MHD inputs are converted to a temporary NIfTI (RAS affine from the ITK header) first.
        """
        with tempfile.TemporaryDirectory(prefix="medseg-") as tmp:
            paths = [as_nifti(p, Path(tmp)) for p in image_paths]
            try:
                data = self.pre({"image": paths})
            except Exception as err:  # MONAI wraps reader errors; report the root cause with the file name
                cause: BaseException = err
                while cause.__cause__ is not None:
                    cause = cause.__cause__
                raise ValueError(f"{image_paths[0]}: cannot load ({type(cause).__name__}: {cause})") from err
        return self._predict_loaded(data)

    def _predict_loaded(self, data: Any) -> tuple[np.ndarray, np.ndarray]:
        image = data["image"]  # MetaTensor (C, H, W, D) in the network's space
        probs = self.probabilities(image.as_tensor()[None].float())[0].cpu()  # (K, H, W, D)
        data["pred"] = MetaTensor(probs, meta=image.meta, applied_operations=image.applied_operations)
        inverted = T.Invertd("pred", self.pre, orig_keys="image", nearest_interp=False)(data)["pred"]
        probs_orig = inverted.as_tensor() if isinstance(inverted, MetaTensor) else torch.as_tensor(inverted)
        labels = probs_orig.argmax(0).numpy()
        dtype = np.uint8 if self.num_classes <= 255 else np.uint16
        return labels.astype(dtype), probs_orig.numpy()
