"""Turning shard cells into images, and batches of images into normalised, augmented float tensors.

Two halves: decoding (shard cells -> uint8 ``[N, H, W, C]``, in the reader's processes; encoded images
are resized and, in training, random-resized-cropped here) and :class:`BatchTransform` (pad-crop, flip
and normalisation of whole uint8 batches as tensor ops, on the device that trains on them). The same
transform serves the torch reader (:class:`anytime.data.ShardLoader`) and the Ray Data path.
"""

from __future__ import annotations

import functools
import io
import math
import warnings
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import torch
from PIL import Image, UnidentifiedImageError
from torch import Tensor

from anytime.data.errors import DataError

# PIL only warns between its pixel limit and twice that; no training image comes near, so refuse there.
warnings.filterwarnings("error", category=Image.DecompressionBombWarning)


@dataclass(frozen=True)
class Augment:
    """Training augmentation: zero-pad + random crop, random horizontal flip, random-resized crop.

    ``resized_crop`` applies to encoded (ImageNet-style) images only; ``crop_padding`` to raw ones.
    """

    crop_padding: int = 0
    flip: bool = False
    resized_crop: bool = False

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# Flips would turn digits into other symbols, so only natural-image datasets flip by default.
DEFAULT_AUGMENT: dict[str, Augment] = {
    "digits": Augment(crop_padding=1),
    "mnist": Augment(crop_padding=2),
    "fashion_mnist": Augment(crop_padding=2),
    "kmnist": Augment(crop_padding=2),
    "svhn": Augment(crop_padding=4),
    "cifar10": Augment(crop_padding=4, flip=True),
    "cifar100": Augment(crop_padding=4, flip=True),
    "imagefolder": Augment(flip=True, resized_crop=True),
}


def default_augment(dataset: str) -> Augment:
    """The standard training augmentation of ``dataset`` (see :data:`DEFAULT_AUGMENT`)."""
    return DEFAULT_AUGMENT.get(dataset, Augment())


def raw_images(cells: pa.Array | pa.ChunkedArray | Sequence[bytes], shape: Sequence[int]) -> np.ndarray:
    """View raw-pixel cells as uint8 ``[N, H, W, C]`` (zero-copy for a contiguous Arrow binary column)."""
    if isinstance(cells, pa.ChunkedArray):
        cells = cells.combine_chunks()
    if isinstance(cells, pa.Array):
        offsets = np.frombuffer(cells.buffers()[1], dtype=np.int32)[
            cells.offset : cells.offset + len(cells) + 1
        ]
        flat = np.frombuffer(cells.buffers()[2], dtype=np.uint8)[offsets[0] : offsets[-1]]
        count = len(cells)
    else:
        flat = np.frombuffer(b"".join(bytes(c) for c in cells), dtype=np.uint8)
        count = len(cells)
    if flat.size != count * int(np.prod(shape)):
        raise DataError(f"image cells hold {flat.size} bytes, expected {count} images of shape {list(shape)}")
    return flat.reshape(count, *shape)


def _resized_crop_box(width: int, height: int, rng: np.random.Generator) -> tuple[int, int, int, int]:
    """Inception-style box: 8%-100% of the area, aspect ratio 3/4-4/3 (centre fallback)."""
    area = width * height
    for _ in range(10):
        target = area * rng.uniform(0.08, 1.0)
        ratio = np.exp(rng.uniform(np.log(3 / 4), np.log(4 / 3)))
        w, h = round(np.sqrt(target * ratio)), round(np.sqrt(target / ratio))
        if 0 < w <= width and 0 < h <= height:
            x, y = int(rng.integers(0, width - w + 1)), int(rng.integers(0, height - h + 1))
            return x, y, x + w, y + h
    side = min(width, height)
    x, y = (width - side) // 2, (height - side) // 2
    return x, y, x + side, y + side


@contextmanager
def _decoding() -> Iterator[None]:
    """PIL's many error types for undecodable, truncated or over-large images as one-line DataErrors."""
    try:
        yield
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise DataError(f"refusing a decompression bomb ({str(exc).split(',')[0]})") from None
    except UnidentifiedImageError:
        raise DataError("not a JPEG or PNG image") from None
    except DataError:
        raise
    except Exception as exc:  # PIL raises several types for undecodable bytes
        raise DataError(f"cannot decode image ({exc})") from None


def open_image(data: bytes, *, reduced: bool = False) -> Image.Image:
    """Fully decode a JPEG/PNG to RGB; undecodable, truncated or over-large images raise DataError.

    The size comes from the header, so an image declaring a huge canvas is refused before any pixel
    memory is allocated. ``reduced`` decodes a JPEG at 1/8 scale (every block is still read, so damage
    is still found) for checks that do not need the pixels.
    """
    with _decoding():
        image = Image.open(io.BytesIO(data))
        if reduced:
            image.draft("RGB", (1, 1))
        return image.convert("RGB")


def _centre_box(width: int, height: int, size: int) -> tuple[float, float, float, float]:
    """The evaluation crop in source pixels: the centre square that the usual "resize the short side to
    ``size / 0.875``, centre-crop ``size``" keeps."""
    side = 0.875 * min(width, height)
    x, y = (width - side) / 2, (height - side) / 2
    return x, y, x + side, y + side


def decode_encoded(data: bytes, size: int, rng: np.random.Generator | None) -> np.ndarray:
    """Decode a JPEG/PNG to uint8 ``[size, size, 3]``: random-resized crop when ``rng`` is given, else
    resize the short side to ``size / 0.875`` and centre-crop (the usual evaluation transform).

    The crop box is chosen from the header's size; a JPEG is then decoded at the smallest DCT scale
    (1/2, 1/4 or 1/8: libjpeg skips the pixel work) that still leaves the box at least ``size`` pixels
    on each side, so a large photo cropped to a small input costs a fraction of a full decode.
    """
    with _decoding():
        image = Image.open(io.BytesIO(data))
        width, height = image.size
        box = _resized_crop_box(width, height, rng) if rng is not None else _centre_box(width, height, size)
        x0, y0, x1, y1 = box
        image.draft("RGB", (math.ceil(size * width / (x1 - x0)), math.ceil(size * height / (y1 - y0))))
        sx, sy = image.width / width, image.height / height
        image = image.convert("RGB")
        return np.asarray(
            image.resize((size, size), Image.BILINEAR, box=(x0 * sx, y0 * sy, x1 * sx, y1 * sy))
        )


def decode_images(
    cells: pa.Array | pa.ChunkedArray | Sequence[bytes],
    manifest: Mapping[str, Any],
    rng: np.random.Generator | None = None,
    augment: Augment | None = None,
) -> np.ndarray:
    """uint8 ``[N, H, W, C]`` images from shard cells (raw or encoded, as the manifest says)."""
    if manifest["encoding"] == "raw":
        return raw_images(cells, manifest["image_shape"])
    crop_rng = rng if augment is not None and augment.resized_crop else None
    values = cells.to_pylist() if isinstance(cells, pa.Array | pa.ChunkedArray) else cells
    return np.stack([decode_encoded(v, manifest["image_shape"][0], crop_rng) for v in values])


def augment_batch(images: Tensor, augment: Augment | None, generator: torch.Generator | None) -> Tensor:
    """Random zero-pad + crop and horizontal flip of uint8 ``[N, H, W, C]`` on its own device, returned as
    a channels-first view ``[N, C, H, W]`` (channels-last in memory).

    Each image gets its own crop offsets and flip, drawn from ``generator`` (on the images' device).
    """
    n, h, w, c = images.shape
    device = images.device
    if augment is not None and augment.crop_padding:
        p = augment.crop_padding
        hp, wp = h + 2 * p, w + 2 * p
        padded = images.new_zeros(n, hp, wp, c)
        padded[:, p : p + h, p : p + w] = images
        # every window of every image as a view [N, dy, dx, H, W, C]; one indexing op picks each image's own
        windows = padded.as_strided(
            (n, 2 * p + 1, 2 * p + 1, h, w, c), (hp * wp * c, wp * c, c, wp * c, c, 1)
        )
        dy, dx = torch.randint(0, 2 * p + 1, (2, n), generator=generator, device=device)
        images = windows[torch.arange(n, device=device), dy, dx]
    if augment is not None and augment.flip:
        flip = torch.rand(n, generator=generator, device=device) < 0.5
        images = torch.where(flip[:, None, None, None], images.flip(2), images)  # no host sync, unlike a mask
    return images.permute(0, 3, 1, 2)


@functools.cache
def _affine(mean: tuple[float, ...], std: tuple[float, ...], device: torch.device) -> tuple[Tensor, Tensor]:
    """``scale``, ``shift`` [C, 1, 1] on ``device``, built once per process: a per-batch copy of them from
    the host would wait for the device (a host sync per batch)."""
    std_t = torch.tensor(std, dtype=torch.float32)
    scale = (1.0 / (255.0 * std_t))[:, None, None]
    shift = (torch.tensor(mean, dtype=torch.float32) / std_t)[:, None, None]
    return scale.to(device), shift.to(device)


def normalise_batch(images: Tensor, mean: Sequence[float], std: Sequence[float]) -> Tensor:
    """float32 ``(x / 255 - mean) / std`` per channel, for uint8 ``[N, C, H, W]`` (any memory layout)."""
    scale, shift = _affine(tuple(mean), tuple(std), images.device)
    return images.float() * scale - shift


@dataclass(frozen=True)
class BatchTransform:
    """What a batch goes through on the training device: uint8 ``[N, H, W, C]`` (as the reader yields it)
    -> augmented, normalised float32 ``[N, C, H, W]`` in ``memory_format``.

    The uint8 batch is what crosses to the device (a quarter of float32's bytes); pad-crop, flip and
    normalisation then run there as a few batched tensor ops. Random-resized crops of encoded images are
    part of decoding and stay in the reader.
    """

    mean: tuple[float, ...]
    std: tuple[float, ...]
    augment: Augment | None = None
    memory_format: torch.memory_format = torch.contiguous_format

    @classmethod
    def for_manifest(cls, manifest: Mapping[str, Any], augment: Augment | None = None) -> BatchTransform:
        return cls(tuple(manifest["mean"]), tuple(manifest["std"]), augment)

    def __call__(self, images: Tensor, generator: torch.Generator | None = None) -> Tensor:
        chw = augment_batch(images, self.augment, generator).contiguous(memory_format=self.memory_format)
        return normalise_batch(chw, self.mean, self.std)  # keeps the layout: 1 byte per value moved, not 4


def prepare_batch(
    cells: pa.Array | pa.ChunkedArray | Sequence[bytes],
    manifest: Mapping[str, Any],
    *,
    augment: Augment | None = None,
    seed: int | None = None,
) -> np.ndarray:
    """Shard cells -> normalised float32 ``[N, C, H, W]`` on the CPU, augmented when ``augment`` is given
    (for consumers that take numpy, such as Ray Data's ``map_batches``)."""
    rng = np.random.default_rng(seed)
    generator = torch.Generator().manual_seed(int(rng.integers(2**63)))
    images = torch.from_numpy(np.ascontiguousarray(decode_images(cells, manifest, rng, augment)))
    return BatchTransform.for_manifest(manifest, augment)(images, generator).numpy()


def decode_batch(
    batch: pa.Table | Mapping[str, Any],
    *,
    manifest: Mapping[str, Any],
    augment: Augment | None = None,
    seed: int | None = None,
) -> dict[str, np.ndarray]:
    """A Ray Data ``map_batches`` function: ``{image, label}`` columns -> ``{image [N,C,H,W], label}``."""
    cells = batch.column("image") if isinstance(batch, pa.Table) else batch["image"]
    labels = batch.column("label").to_numpy() if isinstance(batch, pa.Table) else np.asarray(batch["label"])
    return {
        "image": prepare_batch(cells, manifest, augment=augment, seed=seed),
        "label": labels.astype(np.int64),
    }
