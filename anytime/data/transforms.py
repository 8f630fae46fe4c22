"""Turning shard cells into normalised float tensors, with per-dataset augmentation.

Work is done on whole chunks of rows at once (one numpy op for every crop, flip and normalisation),
which is what keeps the shard reader close to in-memory speed. The same function serves the torch
reader and the Ray Data path.
"""

from __future__ import annotations

import io
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import pyarrow as pa
from numpy.lib.stride_tricks import sliding_window_view
from PIL import Image, UnidentifiedImageError

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


def open_image(data: bytes, *, reduced: bool = False) -> Image.Image:
    """Fully decode a JPEG/PNG to RGB; undecodable, truncated or over-large images raise DataError.

    The size comes from the header, so an image declaring a huge canvas is refused before any pixel
    memory is allocated. ``reduced`` decodes a JPEG at 1/8 scale (every block is still read, so damage
    is still found) for checks that do not need the pixels.
    """
    try:
        image = Image.open(io.BytesIO(data))
        if reduced:
            image.draft("RGB", (1, 1))
        return image.convert("RGB")
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise DataError(f"refusing a decompression bomb ({str(exc).split(',')[0]})") from None
    except UnidentifiedImageError:
        raise DataError("not a JPEG or PNG image") from None
    except Exception as exc:  # PIL raises several types for undecodable bytes
        raise DataError(f"cannot decode image ({exc})") from None


def decode_encoded(data: bytes, size: int, rng: np.random.Generator | None) -> np.ndarray:
    """Decode a JPEG/PNG to uint8 ``[size, size, 3]``: random-resized crop when ``rng`` is given, else
    resize the short side to ``size / 0.875`` and centre-crop (the usual evaluation transform)."""
    image = open_image(data)
    if rng is not None:
        box = _resized_crop_box(*image.size, rng)
        return np.asarray(image.resize((size, size), Image.BILINEAR, box=box))
    scale = size / 0.875 / min(image.size)
    w, h = max(size, round(image.width * scale)), max(size, round(image.height * scale))
    image = image.resize((w, h), Image.BILINEAR)
    x, y = (w - size) // 2, (h - size) // 2
    return np.asarray(image.crop((x, y, x + size, y + size)))


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


def augment_images(images: np.ndarray, augment: Augment | None, rng: np.random.Generator) -> np.ndarray:
    """Random pad-crop and flip of uint8 ``[N, H, W, C]``, returned channels-first ``[N, C, H, W]``."""
    n, h, w, _ = images.shape
    if augment is None or augment.crop_padding == 0:
        out = images.transpose(0, 3, 1, 2)
    else:
        p = augment.crop_padding
        padded = np.pad(images, ((0, 0), (p, p), (p, p), (0, 0)))
        windows = sliding_window_view(padded, (h, w), axis=(1, 2))  # [N, 2p+1, 2p+1, C, H, W]
        out = windows[np.arange(n), rng.integers(0, 2 * p + 1, n), rng.integers(0, 2 * p + 1, n)]
    if augment is not None and augment.flip:
        flip = rng.random(n) < 0.5
        out = np.where(flip[:, None, None, None], out[..., ::-1], out)
    return out


def normalise(images_chw: np.ndarray, mean: Sequence[float], std: Sequence[float]) -> np.ndarray:
    """float32 ``(x / 255 - mean) / std`` per channel, for uint8 ``[N, C, H, W]``."""
    scale = (1.0 / (255.0 * np.asarray(std, dtype=np.float32)))[:, None, None]
    shift = (np.asarray(mean, dtype=np.float32) / np.asarray(std, dtype=np.float32))[:, None, None]
    return images_chw.astype(np.float32) * scale - shift


def prepare_batch(
    cells: pa.Array | pa.ChunkedArray | Sequence[bytes],
    manifest: Mapping[str, Any],
    *,
    augment: Augment | None = None,
    rng: np.random.Generator | None = None,
) -> np.ndarray:
    """Shard cells -> normalised float32 ``[N, C, H, W]``, augmented when ``augment`` is given."""
    rng = rng if rng is not None else np.random.default_rng()
    images = decode_images(cells, manifest, rng, augment)
    return normalise(augment_images(images, augment, rng), manifest["mean"], manifest["std"])


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
    rng = np.random.default_rng(seed)
    return {
        "image": prepare_batch(cells, manifest, augment=augment, rng=rng),
        "label": labels.astype(np.int64),
    }
