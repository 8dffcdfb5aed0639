"""Post-processing of predicted label maps."""

from __future__ import annotations

import numpy as np


def keep_largest_component(labels: np.ndarray, num_classes: int) -> np.ndarray:
    """Keep the largest 26-connected component of each foreground class; the rest becomes background.

    scipy (a dependency) rather than MONAI's KeepLargestConnectedComponent, which needs scikit-image on the CPU;
    each class is labelled inside its bounding box only.
    """
    from scipy import ndimage

    out = labels.copy()
    for c in range(1, num_classes):
        mask = labels == c
        box = ndimage.find_objects(mask.astype(np.uint8))
        if not box or box[0] is None:
            continue
        sub = mask[box[0]]
        components, n = ndimage.label(sub, structure=np.ones((3,) * sub.ndim))
        if n > 1:
            sizes = np.bincount(components.ravel())
            sizes[0] = 0
            out[box[0]][sub & (components != sizes.argmax())] = 0
    return out
