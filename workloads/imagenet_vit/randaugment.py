"""RandAugment as the reference's PyTorch ImageNet pipeline applies it (Cubuk et al. 2020), on PIL images.

Two operations per image, each drawn uniformly from the 16 below and applied at the reference's
fixed magnitude (its `ops_space`, used as is: the maxima of the RandAugment paper's ranges);
the geometric ones and Rotate take a random sign. Geometric ops use nearest-neighbour sampling
and fill with grey 128. Solarize's threshold of 256 leaves every pixel unchanged, as in the
reference.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

NUM_OPS = 2
FILL = (128, 128, 128)

# name -> (magnitude, whether its sign is random)
OPS: dict[str, tuple[float, bool]] = {
    "ShearX": (0.3, True),
    "ShearY": (0.3, True),
    "TranslateX": (100.0, True),
    "TranslateY": (100.0, True),
    "Rotate": (30.0, True),
    "Brightness": (1.9, False),
    "Color": (1.9, False),
    "Contrast": (1.9, False),
    "Sharpness": (1.9, False),
    "Posterize": (4.0, False),
    "Solarize": (256.0, False),
    "SolarizeAdd": (110.0, False),
    "AutoContrast": (0.0, False),
    "Equalize": (0.0, False),
    "Invert": (0.0, False),
    "Cutout": (40.0, False),
}


def _affine(img: Any, matrix: tuple[float, ...]) -> Any:
    """PIL's inverse map: output (x, y) samples input (a x + b y + c, d x + e y + f)."""
    from PIL import Image

    return img.transform(
        img.size, Image.Transform.AFFINE, matrix, Image.Resampling.NEAREST, fillcolor=FILL
    )


def solarize(img: Any, threshold: float) -> Any:
    from PIL import Image

    x = np.asarray(img)
    return Image.fromarray(np.where(x < threshold, x, 255 - x).astype(np.uint8))


def solarize_add(img: Any, addition: int, threshold: int = 128) -> Any:
    """Adds `addition` (clipped to 0-255) to the pixels below `threshold`."""
    from PIL import Image

    x = np.asarray(img)
    added = np.clip(x.astype(np.int64) + addition, 0, 255).astype(np.uint8)
    return Image.fromarray(np.where(x < threshold, added, x))


def cutout(img: Any, pad_size: int, rng: np.random.Generator) -> Any:
    """A grey square of side 2 * pad_size (clipped at the border) around a random point.

    The reference draws the point with `np.random.uniform(width)` (= uniform between 1 and the width).
    """
    from PIL import ImageDraw

    w, h = img.size
    size = 2 * pad_size
    x0 = int(max(0.0, 1.0 + (w - 1.0) * rng.random() - size / 2.0))
    y0 = int(max(0.0, 1.0 + (h - 1.0) * rng.random() - size / 2.0))
    x1, y1 = int(min(w, x0 + size)), int(min(h, y0 + size))
    img = img.copy()
    ImageDraw.Draw(img).rectangle((x0, y0, x1, y1), FILL)
    return img


def apply_op(img: Any, name: str, magnitude: float, rng: np.random.Generator) -> Any:
    from PIL import Image, ImageEnhance, ImageOps

    ops: dict[str, Callable[[], Any]] = {
        # torchvision's affine with shear angle atan(m) about the origin: x_in = x + m y.
        "ShearX": lambda: _affine(img, (1, magnitude, 0, 0, 1, 0)),
        "ShearY": lambda: _affine(img, (1, 0, 0, magnitude, 1, 0)),
        # A translation by t (truncated to whole pixels) moves the content by +t.
        "TranslateX": lambda: _affine(img, (1, 0, -int(magnitude), 0, 1, 0)),
        "TranslateY": lambda: _affine(img, (1, 0, 0, 0, 1, -int(magnitude))),
        "Rotate": lambda: img.rotate(magnitude, Image.Resampling.NEAREST, fillcolor=FILL),
        "Brightness": lambda: ImageEnhance.Brightness(img).enhance(magnitude),
        "Color": lambda: ImageEnhance.Color(img).enhance(magnitude),
        "Contrast": lambda: ImageEnhance.Contrast(img).enhance(magnitude),
        "Sharpness": lambda: ImageEnhance.Sharpness(img).enhance(magnitude),
        "Posterize": lambda: ImageOps.posterize(img, int(magnitude)),
        "Solarize": lambda: solarize(img, magnitude),
        "SolarizeAdd": lambda: solarize_add(img, int(magnitude)),
        "AutoContrast": lambda: ImageOps.autocontrast(img),
        "Equalize": lambda: ImageOps.equalize(img),
        "Invert": lambda: ImageOps.invert(img),
        "Cutout": lambda: cutout(img, int(magnitude), rng),
    }
    if name not in ops:
        raise ValueError(f"unknown RandAugment operation {name!r}; known: {', '.join(ops)}")
    return ops[name]()


def sample_ops(rng: np.random.Generator, num_ops: int = NUM_OPS) -> list[tuple[str, float]]:
    """`num_ops` (name, signed magnitude) drawn uniformly, with replacement, from OPS."""
    names = list(OPS)
    ops = []
    for _ in range(num_ops):
        name = names[int(rng.integers(len(names)))]
        magnitude, signed = OPS[name]
        if signed and rng.integers(2):
            magnitude = -magnitude
        ops.append((name, magnitude))
    return ops


def randaugment(img: Any, rng: np.random.Generator, num_ops: int = NUM_OPS) -> Any:
    """RandAugment: the sampled operations applied in turn."""
    for name, magnitude in sample_ops(rng, num_ops):
        img = apply_op(img, name, magnitude, rng)
    return img
