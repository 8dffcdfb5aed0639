"""A small stand-in for the nilearn wheel (imported as ``fake_nilearn``), so no test downloads the real one from PyPI.

scripts/prepare_mni152.py and notebooks/real_data.ipynb read the MNI152 T1 and its grey/white matter maps straight
out of the wheel's zip; this writes a zip with the same member names holding a 1 mm 'brain' of concentric shells.
"""

import gzip
import zipfile
from pathlib import Path

import nibabel as nib
import numpy as np


def fake_nilearn_wheel(path: Path) -> Path:
    """A zip shaped like the nilearn wheel: a 1 mm 'MNI152' T1 with GM/WM maps (concentric shells, 56³)."""
    grid = np.indices((56, 56, 56)).astype(np.float32) - 27.5
    r = np.sqrt((grid**2).sum(0))  # mm from the centre
    wm, gm = (r < 9).astype(np.float32), ((r >= 9) & (r < 15)).astype(np.float32)
    t1 = np.where(r < 9, 200.0, np.where(r < 15, 140.0, np.where(r < 18, 70.0, 0.0))).astype(np.float32)
    affine = np.diag([1.0, 1.0, 1.0, 1.0])
    affine[:3, 3] = -27.5
    with zipfile.ZipFile(path, "w") as zf:
        for tag, data in (("t1", t1), ("gm", gm * 255), ("wm", wm * 255)):
            raw = nib.Nifti1Image(data.astype(np.uint8), affine).to_bytes()
            name = f"nilearn/datasets/data/mni_icbm152_{tag}_tal_nlin_sym_09a_converted.nii.gz"
            zf.writestr(name, gzip.compress(raw))
    return path
