"""What decoding every image before sharding costs: shard time with validation ÷ without.

The shard stage (``pipelines/shard.py``) reads the raw dataset and writes the shards while every encoded
image is decoded alongside (``anytime.data.write_checked_shards``), against writing alone (``write_shards``),
on the same data in alternating order, each repeat forming its own ratio; the printed value is the median.
Datasets: the embedded digits, a synthetic 60,000-image IDX set (MNIST's size) and a folder of
photo-like JPEGs (optionally some PNGs): the only kind where validation decodes anything, raw-pixel
formats being checked by their readers. Run: ``python -m bench.bench_shard [--repeats 5] [--images 2000]``.
"""

from __future__ import annotations

import argparse
import io
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from anytime.data import materialise_digits, read_dataset, write_checked_shards, write_shards
from anytime.data.formats.idx import write_idx


def write_idx_set(root: Path, n_train: int, n_test: int) -> None:
    rng = np.random.default_rng(0)
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        write_idx(root / f"{prefix}-images-idx3-ubyte", rng.integers(0, 256, (n, 28, 28), dtype=np.uint8))
        write_idx(root / f"{prefix}-labels-idx1-ubyte", rng.integers(0, 10, n, dtype=np.uint8))


def write_image_folder(root: Path, images: int, side: int, png_every: int) -> None:
    rng = np.random.default_rng(0)
    for i in range(images):
        split = "val" if i % 5 == 0 else "train"
        folder = root / split / f"class{i // 5 % 10}"
        folder.mkdir(parents=True, exist_ok=True)
        fmt = "PNG" if png_every and i % png_every == 0 else "JPEG"
        buffer = io.BytesIO()
        coarse = Image.fromarray(rng.integers(0, 256, (16, 16, 3), dtype=np.uint8))  # photo-like: smooth
        coarse.resize((side, side), Image.BILINEAR).save(buffer, format=fmt)
        (folder / f"img{i}.{fmt.lower()}").write_bytes(buffer.getvalue())


def shard_seconds(dataset: str, root: Path, out: Path, *, validate: bool) -> float:
    started = time.perf_counter()
    raw = read_dataset(dataset, root, image_size=32)
    options = {"val_fraction": 0.1, "seed": 0, "rows_per_shard": 512, "row_group_rows": 128}
    if validate:
        write_checked_shards(raw, root, out, **options)
    else:
        write_shards(raw, out, **options)
    elapsed = time.perf_counter() - started
    shutil.rmtree(out)
    return elapsed


def ratio(dataset: str, root: Path, work: Path, repeats: int) -> tuple[float, float]:
    """Median of per-repeat (with ÷ without) wall-time ratios, and the median time without."""
    ratios, plain = [], []
    for repeat in range(repeats):
        order = (False, True) if repeat % 2 == 0 else (True, False)
        times = {v: shard_seconds(dataset, root, work / "shards", validate=v) for v in order}
        ratios.append(times[True] / times[False])
        plain.append(times[False])
    return statistics.median(ratios), statistics.median(plain)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--idx-images", type=int, default=60_000)
    parser.add_argument("--images", type=int, default=2000, help="files in the image-folder set")
    parser.add_argument("--side", type=int, default=256, help="image-folder images are side x side")
    parser.add_argument("--png-every", type=int, default=0, help="every n-th image a PNG (0: JPEG only)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        sets = {"digits": work / "digits", "mnist": work / "idx", "imagefolder": work / "folder"}
        materialise_digits(sets["digits"])
        sets["mnist"].mkdir()
        write_idx_set(sets["mnist"], args.idx_images, args.idx_images // 6)
        write_image_folder(sets["imagefolder"], args.images, args.side, args.png_every)
        for dataset, root in sets.items():
            value, seconds = ratio(dataset, root, work, args.repeats)
            print(f"shard {dataset} validated/plain: {value:.3f} (median of {args.repeats})")
            print(f"  {dataset}: {seconds:.2f} s to shard without validation (median)")


if __name__ == "__main__":
    main()
