"""Image transforms for the datasets: ToTensor, Resize and Compose, in NumPy.

Layout conventions (the book's: images are stored channels-last, models read channels-first):

* a 2-D array is one grayscale image ``(H, W)``;
* an array of 3 or more dimensions whose last axis has length 1, 3 or 4 is channels-last:
  ``(H, W, C)`` or a batch ``(N, H, W, C)``;
* any other 3-D array is a batch of grayscale images ``(N, H, W)`` (what slicing a dataset such as
  ``FashionMNIST`` gives), or, for Resize, any array whose last two axes are ``(H, W)`` -- such as
  the channels-first output of ToTensor.

The datasets recognise ``ToTensor()`` and ``Compose([Resize(s), ToTensor()])`` (in either order)
and run them on whole minibatches, with the uint8 -> float32 scaling fused into the compiled row
gather; the transforms below are what they compute, one image (or batch) at a time.
"""
from __future__ import annotations

import functools
import numbers
from typing import Callable, Iterable, Sequence, Tuple, Union

import numpy as np

__all__ = ["ToTensor", "Resize", "Compose", "resize_bilinear", "PIXEL_SCALE"]

#: uint8 pixels are multiplied by this float32 constant (not divided by 255): the compiled
#: gather scales with exactly this value, so both paths give the same bits.
PIXEL_SCALE = np.float32(1 / 255)

_CHANNEL_SIZES = (1, 3, 4)


def _channels_last(shape: Tuple[int, ...]) -> bool:
    return len(shape) >= 3 and shape[-1] in _CHANNEL_SIZES


def _image_array(name: str, img) -> np.ndarray:
    try:
        a = np.asarray(img)
    except Exception as exc:
        raise TypeError(f"{name} must be an image array, got {type(img).__name__} "
                        f"({exc})") from None
    if a.dtype.kind not in "uif":
        raise TypeError(f"{name} must be an image of uint8 or float values, got dtype {a.dtype}")
    if a.ndim < 2:
        raise ValueError(f"{name} must be an image of at least 2 dimensions (H, W), got shape "
                         f"{a.shape}")
    return a


class ToTensor:
    """uint8 image(s) -> float32 channels-first arrays in [0, 1].

    ``(H, W)`` -> ``(1, H, W)``; ``(H, W, C)`` -> ``(C, H, W)``; ``(N, H, W)`` -> ``(N, 1, H, W)``;
    ``(N, H, W, C)`` -> ``(N, C, H, W)`` (see the module docstring for how 3-D input is read).
    uint8 values are multiplied by ``np.float32(1/255)``; float input is only rearranged (and
    made float32), as it is assumed to be scaled already.  Other dtypes are refused."""

    def __call__(self, img) -> np.ndarray:
        a = _image_array("img", img)
        if a.dtype != np.uint8 and a.dtype.kind != "f":
            raise TypeError(f"ToTensor takes uint8 (0..255) or float images, got dtype {a.dtype}")
        if a.ndim == 2:
            a = a[None]
        elif _channels_last(a.shape) and a.ndim in (3, 4):
            a = np.moveaxis(a, -1, -3)
        elif a.ndim == 3:
            a = a[:, None]
        else:
            raise ValueError(f"ToTensor takes (H, W), (H, W, C), (N, H, W) or (N, H, W, C) images "
                             f"with C in {_CHANNEL_SIZES}, got shape {a.shape}")
        if a.dtype == np.uint8:
            out = np.empty(a.shape, np.float32)
            np.multiply(a, PIXEL_SCALE, out=out, dtype=np.float32)
            return out
        return np.ascontiguousarray(a, dtype=np.float32)

    def __repr__(self) -> str:
        return "ToTensor()"


def _check_size(name: str, size) -> Tuple[int, int]:
    """`size` as (height, width): an int means a square."""
    if isinstance(size, (bool, np.bool_)):
        raise TypeError(f"{name} must be an int or a (height, width) pair, got {size!r}")
    if isinstance(size, numbers.Integral):
        pair = (int(size), int(size))
    elif isinstance(size, (tuple, list)) and len(size) == 2 and all(
            isinstance(s, numbers.Integral) and not isinstance(s, (bool, np.bool_)) for s in size):
        pair = (int(size[0]), int(size[1]))
    else:
        raise TypeError(f"{name} must be an int or a (height, width) pair of ints, got "
                        f"{size!r}"[:200])
    if pair[0] <= 0 or pair[1] <= 0:
        raise ValueError(f"{name} must be positive, got {size!r}")
    if pair[0] > 1 << 15 or pair[1] > 1 << 15:
        raise ValueError(f"{name} must be at most {1 << 15} pixels a side, got {size!r}")
    return pair


@functools.lru_cache(maxsize=64)
def _weights(n_in: int, n_out: int, dtype: str, transposed: bool = False) -> np.ndarray:
    """The (n_out, n_in) matrix of bilinear resampling along one axis, as PIL computes it.

    Output pixel i is centred at ``(i + 0.5) * n_in / n_out`` in input coordinates (pixel
    centres at j + 0.5: the "half-pixel", align_corners=False convention).  The filter is the
    triangle ``max(0, 1 - |d|)``; when shrinking it is widened by the shrink factor, so every
    input pixel contributes (antialiasing, as PIL does; OpenCV's INTER_LINEAR does not).  Taps
    outside the image are dropped and the rest renormalised to sum to 1, which at the borders
    amounts to clamping.  `transposed` gives the (n_in, n_out) transpose, C-contiguous (a
    transposed view would make every matrix product copy it or take a slower path)."""
    scale = n_in / n_out
    support = max(scale, 1.0)
    centers = (np.arange(n_out) + 0.5) * scale
    # PIL rounds the window ends with (int)(x + 0.5), i.e. truncation toward zero.
    lo = np.maximum(np.trunc(centers - support + 0.5).astype(np.int64), 0)
    hi = np.minimum(np.trunc(centers + support + 0.5).astype(np.int64), n_in)
    j = np.arange(n_in)
    inside = (j[None, :] >= lo[:, None]) & (j[None, :] < hi[:, None])
    w = np.clip(1.0 - np.abs((j[None, :] + 0.5 - centers[:, None]) / support), 0.0, None)
    w = np.where(inside, w, 0.0)
    total = w.sum(axis=1, keepdims=True)
    w = np.divide(w, total, out=np.zeros_like(w), where=total != 0)
    out = np.ascontiguousarray(w.T if transposed else w, dtype=dtype)
    out.flags.writeable = False  # shared through the cache
    return out


def resize_bilinear(images, size) -> np.ndarray:
    """Resize the last two axes (H, W) of `images` to `size` (int or (height, width)).

    Bilinear with PIL's conventions (see :func:`_weights`), vectorised over all leading axes:
    two matrix products per image, widths first then heights, as PIL orders them.  float32 and
    float64 keep their dtype; uint8 is computed in float32, then rounded and clipped back to
    uint8 (PIL rounds in fixed point, so it may differ from this by 1)."""
    a = _image_array("images", images)
    if a.dtype.kind != "f" and a.dtype != np.uint8:
        raise TypeError(f"images must be uint8 or float, got dtype {a.dtype}")
    h, w = _check_size("size", size)
    H, W = a.shape[-2:]
    if H == 0 or W == 0:
        raise ValueError(f"images must have non-empty height and width, got shape {a.shape}")
    work = np.float64 if a.dtype == np.float64 else np.float32
    x = np.asarray(a, dtype=work)
    if (h, w) == (H, W):
        out = x.copy()
    else:
        lead = a.shape[:-2]
        x3 = x.reshape((-1, H, W))
        # Stacked small products: numpy hands each image to BLAS, which keeps small products on
        # one thread (a single big product over all rows lets OpenBLAS spread it over threads,
        # which was 10x slower on a busy 2-core machine).
        wx_t = _weights(W, w, np.dtype(work).name, transposed=True)
        wy = _weights(H, h, np.dtype(work).name)
        if H * w * (W + h) <= h * W * (H + w):  # widths first (PIL's order) unless dearer
            out = np.matmul(wy, np.matmul(x3, wx_t))
        else:
            out = np.matmul(np.matmul(wy, x3), wx_t)
        out = out.reshape(lead + (h, w))
    if a.dtype.kind == "f":
        return out
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


class Resize:
    """Resize images to `size` (an int for a square, or (height, width)) with bilinear
    interpolation, PIL's conventions (half-pixel centres, antialiased when shrinking).

    Takes ``(H, W)``, channels-last ``(H, W, C)`` / ``(N, H, W, C)``, or any array whose last two
    axes are (H, W) (a batch ``(N, H, W)``, a channels-first ``(C, H, W)``), and keeps that
    layout.  uint8 stays uint8 (rounded), float stays float.

    The shape alone tells the layouts apart: an array of 3 or more dimensions whose last axis
    has length 1, 3 or 4 is read as channels-last (see the module docstring).  So a
    channels-first image (or a ToTensor output) only 1, 3 or 4 pixels wide is read wrongly:
    resize before ToTensor, as the book does, or pass such images channels-last."""

    def __init__(self, size: Union[int, Sequence[int]]):
        self.size = _check_size("size", size)

    def __call__(self, img) -> np.ndarray:
        a = _image_array("img", img)
        if _channels_last(a.shape):
            moved = np.moveaxis(a, -1, -3)
            return np.moveaxis(resize_bilinear(moved, self.size), -3, -1)
        return resize_bilinear(a, self.size)

    def __repr__(self) -> str:
        return f"Resize(size={self.size})"


class Compose:
    """Apply `transforms` one after the other."""

    def __init__(self, transforms: Iterable[Callable]):
        if isinstance(transforms, (str, bytes)) or not isinstance(transforms, Iterable):
            raise TypeError(f"transforms must be a list of callables, got "
                            f"{type(transforms).__name__}")
        self.transforms = list(transforms)
        for i, t in enumerate(self.transforms):
            if not callable(t):
                raise TypeError(f"transforms[{i}] must be callable, got {type(t).__name__}")

    def __call__(self, img):
        for t in self.transforms:
            img = t(img)
        return img

    def __repr__(self) -> str:
        return f"Compose({self.transforms!r})"
