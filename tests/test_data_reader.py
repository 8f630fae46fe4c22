"""ShardDataset and ShardLoader: whole uint8 batches, every sample exactly once per epoch over any ranks x
workers, seeded shuffling, per-dataset augmentation and normalisation on the device, persistent DataLoader
workers, ranks under the spawn start method and S3 roots."""

from __future__ import annotations

import io
import json
import math
import tempfile
from collections import Counter
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from anytime.data import (
    Augment,
    DataError,
    RawDataset,
    ShardDataset,
    ShardLoader,
    Split,
    decode_batch,
    load_manifest,
    read_dataset,
    write_shards,
)
from anytime.data.loader import augment_seed
from anytime.data.reader import Piece, shard_filesystem
from anytime.data.transforms import (
    BatchTransform,
    _centre_box,
    _resized_crop_box,
    augment_batch,
    decode_encoded,
)
from tests.fixtures import s3 as s3_fixtures
from tests.fixtures.datasets import write_imagefolder
from tests.fixtures.s3 import S3Endpoint

s3_server = s3_fixtures.s3_server


def numbered_dataset(n: int) -> RawDataset:
    """Images whose two pixels spell their own index, so a yielded sample says which row it is."""
    index = np.arange(n)
    images = np.stack([index // 256, index % 256], axis=1).astype(np.uint8).reshape(n, 1, 2, 1)
    split = Split(labels=index % 3, images=images)
    return RawDataset("numbered", ["a", "b", "c"], (1, 2, 1), "raw", {"train": split, "test": split})


def batch_indices(images: torch.Tensor) -> list[int]:
    """The row indices of a uint8 ``[B, 1, 2, 1]`` batch as the reader yields it."""
    pixels = images.reshape(len(images), 2).to(torch.int64)
    return (pixels[:, 0] * 256 + pixels[:, 1]).tolist()


def sample_index(image: torch.Tensor, manifest: dict) -> int:
    """The row index of one normalised float ``[1, 1, 2]`` image as ShardLoader delivers it."""
    pixels = np.rint((image.numpy() * manifest["std"][0] + manifest["mean"][0]) * 255).astype(int).ravel()
    return int(pixels[0] * 256 + pixels[1])


def stream(ds: ShardDataset) -> list[int]:
    """Row indices in the order ``ds`` yields them (in this process)."""
    return [i for images, _ in ds for i in batch_indices(images)]


def shard(tmp: Path, n: int, rows_per_shard: int, row_group_rows: int) -> Path:
    write_shards(
        numbered_dataset(n),
        tmp,
        val_fraction=0.0,
        seed=0,
        rows_per_shard=rows_per_shard,
        row_group_rows=row_group_rows,
    )
    return tmp


@settings(max_examples=40, deadline=None)
@given(
    n=st.integers(1, 90),
    rows_per_shard=st.integers(1, 25),
    row_group_rows=st.integers(1, 9),
    world_size=st.integers(1, 5),
    num_workers=st.integers(1, 4),
    shuffle=st.booleans(),
    epoch=st.integers(0, 3),
    batch_size=st.integers(1, 7),
)
def test_every_sample_exactly_once_over_ranks_and_workers(
    n: int,
    rows_per_shard: int,
    row_group_rows: int,
    world_size: int,
    num_workers: int,
    shuffle: bool,
    epoch: int,
    batch_size: int,
) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = shard(Path(tmp), n, rows_per_shard, row_group_rows)
        per_rank = []
        seen = Counter()
        for rank in range(world_size):
            ds = ShardDataset(
                str(root),
                "train",
                batch_size=batch_size,
                shuffle=shuffle,
                seed=5,
                rank=rank,
                world_size=world_size,
            )
            ds.set_epoch(epoch)
            got, batches = [], 0
            for w in range(num_workers):
                sizes = []
                for images, labels in ds.batches(rank, world_size, w, num_workers):
                    assert images.dtype == torch.uint8 and labels.dtype == torch.int64
                    got += batch_indices(images)
                    sizes.append(len(labels))
                # whole batches across row-group and window edges; only a worker's last one may be short
                assert all(size == batch_size for size in sizes[:-1]) and min(sizes, default=1) > 0
                batches += len(sizes)
            assert len(got) == ds.num_samples and batches == ds.num_batches(num_workers)
            per_rank.append(len(got))
            seen.update(got)
        assert seen == Counter(range(n))  # all samples, none twice
        assert max(per_rank) - min(per_rank) <= 1  # ranks stay in step (DDP needs equal batch counts)


@pytest.fixture(scope="module")
def numbered(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return shard(tmp_path_factory.mktemp("numbered"), 103, rows_per_shard=20, row_group_rows=6)


def loader_indices(loader: ShardLoader) -> list[int]:
    return [sample_index(x, loader.dataset.manifest) for images, _ in loader for x in images]


def test_dataloader_workers_and_ranks_cover_split_once(numbered: Path) -> None:
    seen = []
    for rank in range(2):
        ds = ShardDataset(str(numbered), "train", batch_size=8, shuffle=True, seed=1, rank=rank, world_size=2)
        loader = ShardLoader(ds, device="cpu", workers=2)
        assert len(loader) == len([batch for batch in loader]) == 8  # two workers of ~26 rows: 8+8+8+2 each
        seen += loader_indices(loader)
    assert sorted(seen) == list(range(103))


def test_persistent_workers_follow_set_epoch(numbered: Path) -> None:
    """The loader's workers outlive an epoch; the epoch set afterwards still reaches them (shared memory)."""

    def fresh(epoch: int) -> list[int]:
        ds = ShardDataset(str(numbered), "train", batch_size=8, shuffle=True, seed=1)
        ds.set_epoch(epoch)
        return loader_indices(ShardLoader(ds, device="cpu", workers=2))

    ds = ShardDataset(str(numbered), "train", batch_size=8, shuffle=True, seed=1)
    loader = ShardLoader(ds, device="cpu", workers=2)
    assert loader.loader.persistent_workers and not loader.loader.pin_memory  # pinned only for CUDA
    images, _ = next(iter(loader.loader))
    assert images.dtype == torch.uint8 and images.shape == (8, 1, 2, 1)  # what crosses to the device
    epochs = []
    for epoch in range(3):
        loader.set_epoch(epoch)
        epochs.append(loader_indices(loader))
    assert epochs[0] != epochs[1] != epochs[2] and sorted(epochs[2]) == list(range(103))
    assert epochs == [fresh(0), fresh(1), fresh(2)]


def test_shuffle_depends_on_seed_and_epoch_only(numbered: Path) -> None:
    def order(seed: int, epoch: int, batch_size: int = 16) -> list[int]:
        ds = ShardDataset(str(numbered), "train", batch_size=batch_size, shuffle=True, seed=seed)
        ds.set_epoch(epoch)
        return stream(ds)

    assert order(0, 0) == order(0, 0) == order(0, 0, batch_size=5)  # the batch size only cuts the stream
    assert order(0, 0) != order(0, 1) and order(0, 0) != order(1, 0)
    assert sorted(order(0, 1)) == list(range(103))
    assert stream(ShardDataset(str(numbered), "train", batch_size=16, shuffle=False)) == list(range(103))


def test_defaults_read_in_stored_order_unaugmented_and_shuffle_as_seed_zero_epoch_zero(
    numbered: Path,
) -> None:
    default = ShardDataset(str(numbered), "train", batch_size=10)
    assert default.augment is None and default.shuffle_groups == 4
    assert (default.rank, default.world_size) == (0, 1)  # no process group: the whole split
    assert stream(default) == list(range(103))
    explicit = ShardDataset(str(numbered), "train", batch_size=10, shuffle=True, seed=0)
    explicit.set_epoch(0)
    assert stream(ShardDataset(str(numbered), "train", batch_size=10, shuffle=True)) == stream(explicit)


def test_plan_cuts_the_row_groups_by_hand(tmp_path: Path) -> None:
    """10 rows in 2 shards of 5, row groups of 3 and 2: A0 = rows 0-2, A1 = 3-4, B0 = 5-7, B1 = 8-9."""
    ds = ShardDataset(str(shard(tmp_path, 10, rows_per_shard=5, row_group_rows=3)), "train", batch_size=4)
    a, b = sorted({piece.path for piece in ds.groups})
    assert [(p.path, p.row_group, p.stop) for p in ds.groups] == [(a, 0, 3), (a, 1, 2), (b, 0, 3), (b, 1, 2)]
    # two ranks of 5 rows, each cut for two workers into 2 + 3 rows; no empty piece at a group's edge
    assert ds.plan(0, 2, 0, 2) == [Piece(a, 0, 0, 2)]
    assert ds.plan(0, 2, 1, 2) == [Piece(a, 0, 2, 3), Piece(a, 1, 0, 2)]
    assert ds.plan(1, 2, 0, 2) == [Piece(b, 0, 0, 2)]
    assert ds.plan(1, 2, 1, 2) == [Piece(b, 0, 2, 3), Piece(b, 1, 0, 2)]
    # three ranks: rows 0-2, 3-5, 6-9
    assert ds.plan(0, 3, 0, 1) == [Piece(a, 0, 0, 3)]
    assert ds.plan(1, 3, 0, 1) == [Piece(a, 1, 0, 2), Piece(b, 0, 0, 1)]
    assert ds.plan(2, 3, 0, 1) == [Piece(b, 0, 1, 3), Piece(b, 1, 0, 2)]


def test_shuffle_mixes_rows_within_windows_of_four_row_groups(tmp_path: Path) -> None:
    """8 row groups of 2 rows, shuffled: rows 0-7 come from the first 4 groups of the epoch's group order, in
    an order mixed across those groups (not group after group), rows 8-15 from the other 4."""
    root = shard(tmp_path, 16, rows_per_shard=16, row_group_rows=2)
    ds = ShardDataset(str(root), "train", batch_size=3, shuffle=True)  # batches straddle the windows
    groups = [piece.row_group for piece in ds.plan(0, 1, 0, 1)]
    assert sorted(groups) == list(range(8))
    got = stream(ds)
    group_of = [index // 2 for index in got]
    assert sorted(group_of[:8]) == sorted(2 * groups[:4]) and sorted(group_of[8:]) == sorted(2 * groups[4:])
    assert group_of[:8] != [g for g in groups[:4] for _ in range(2)]  # mixed, not each group's rows in turn


def test_augmentation_flips_some_samples_reproducibly_per_epoch(numbered: Path) -> None:
    """Sample k's pixels are (k // 256, k % 256) = (0, k): a horizontal flip reads (k, 0)."""
    ds = ShardDataset(str(numbered), "train", batch_size=16, augment=Augment(flip=True))
    assert stream(ds) == list(range(103))  # the reader yields the images as stored: flips run on the device
    loader = ShardLoader(ds, device="cpu")

    def flipped() -> list[bool]:
        images = torch.cat([x for x, _ in loader])
        out = []
        for k, x in enumerate(images):
            pixels = np.rint((x.numpy() * ds.manifest["std"][0] + ds.manifest["mean"][0]) * 255).ravel()
            assert pixels.tolist() in ([0, k], [k, 0]), (k, pixels)
            out.append(pixels.tolist() == [k, 0] and k > 0)
        return out

    first = flipped()
    assert 20 < sum(first) < 82  # about half of the 102 samples that a flip changes
    assert flipped() == first
    ds.set_epoch(1)
    assert flipped() != first
    # each rank (and seed, epoch) draws its own augmentation stream
    assert len({augment_seed(s, e, r) for s in range(2) for e in range(2) for r in range(2)}) == 8


def test_device_transform_waits_for_nothing_after_its_first_batch(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every batch crosses as uint8 and is augmented and normalised where it lands: after the first batch
    (which puts the normalisation constants on the device once), no tensor is built from host values (on a
    GPU a pageable copy waits for the device) and no value is read back to the host."""
    transform = BatchTransform((0.5, 0.25, 0.1), (0.2, 0.3, 0.4), Augment(crop_padding=2, flip=True))
    generator = torch.Generator().manual_seed(0)
    batch = torch.randint(0, 256, (8, 6, 6, 3), dtype=torch.uint8)
    first = transform(batch, generator)
    calls: Counter[str] = Counter()

    def counting(name: str, method):
        def counted(*args, **kwargs):
            calls[name] += 1
            return method(*args, **kwargs)

        return counted

    monkeypatch.setattr(torch, "tensor", counting("torch.tensor", torch.tensor))
    for name in ("item", "tolist", "numpy", "cpu", "__bool__", "__int__", "__float__"):
        monkeypatch.setattr(torch.Tensor, name, counting(name, getattr(torch.Tensor, name)))
    again = [transform(batch, generator) for _ in range(3)]
    assert calls == Counter()
    assert all(x.shape == first.shape == (8, 3, 6, 6) and x.dtype == torch.float32 for x in again)


def test_labels_and_normalisation(numbered: Path) -> None:
    ds = ShardDataset(str(numbered), "train", batch_size=32)
    batches = list(ShardLoader(ds, device="cpu"))
    stacked, labels = torch.cat([x for x, _ in batches]), torch.cat([y for _, y in batches])
    assert labels.dtype == torch.int64
    assert all(
        label == sample_index(x, ds.manifest) % 3 for x, label in zip(stacked, labels.tolist(), strict=True)
    )
    assert stacked.dtype == torch.float32 and stacked.shape == (103, 1, 1, 2) and stacked.is_contiguous()
    assert stacked.mean().item() == pytest.approx(0.0, abs=1e-4)
    assert stacked.std(unbiased=False).item() == pytest.approx(1.0, abs=1e-3)


def test_evaluate_takes_a_shard_loader(numbered: Path) -> None:
    """anytime.train.evaluate over ShardLoader batches: every sample once, in the loader's order."""
    from anytime.models import create_model
    from anytime.train import evaluate

    model = create_model("resann", num_classes=3, in_channels=1, n=1, c=4)
    loader = ShardLoader(ShardDataset(str(numbered), "test", batch_size=7), device="cpu")
    probs, labels = evaluate(model, loader, device="cpu")
    images = torch.cat([x for x, _ in loader])
    assert probs.shape == (model.num_heads, len(images), 3) and labels.tolist() == [
        sample_index(x, loader.dataset.manifest) % 3 for x in images
    ]
    with torch.inference_mode():
        expected = model.eval()(images)[-1].softmax(dim=1).numpy()
    np.testing.assert_allclose(probs[-1], expected, rtol=1e-4, atol=1e-6)


def test_ray_data_batches_match_the_loader(numbered: Path) -> None:
    """decode_batch (Ray Data's map_batches) runs the same decoding and BatchTransform on the CPU."""
    ds = ShardDataset(str(numbered), "train", batch_size=103)
    table = pq.read_table(numbered / "train", columns=["image", "label"])
    out = decode_batch(table, manifest=ds.manifest, seed=0)
    (images, labels), *_ = list(ShardLoader(ds, device="cpu"))
    assert out["image"].dtype == np.float32 and out["label"].dtype == np.int64
    np.testing.assert_array_equal(out["image"], images.numpy())
    np.testing.assert_array_equal(out["label"], labels.numpy())
    flipped = decode_batch(table, manifest=ds.manifest, augment=Augment(flip=True), seed=0)["image"]
    assert np.array_equal(
        flipped, decode_batch(table, manifest=ds.manifest, augment=Augment(flip=True), seed=0)["image"]
    )
    assert not np.array_equal(flipped, out["image"])


def test_pad_crop_is_a_window_of_the_padded_image_and_flip_mirrors() -> None:
    generator = torch.Generator().manual_seed(0)
    images = np.random.default_rng(0).integers(1, 256, size=(64, 5, 6, 3), dtype=np.uint8)
    out = augment_batch(torch.from_numpy(images), Augment(crop_padding=2), generator).numpy()
    padded = np.pad(images, ((0, 0), (2, 2), (2, 2), (0, 0))).transpose(0, 3, 1, 2)
    offsets = set()
    for i in range(len(images)):
        hits = [
            (dy, dx)
            for dy in range(5)
            for dx in range(5)
            if np.array_equal(out[i], padded[i, :, dy : dy + 5, dx : dx + 6])
        ]
        assert hits, "crop is not a window of the zero-padded image"
        offsets.add(hits[0])
    assert len(offsets) > 5
    flipped = augment_batch(torch.from_numpy(images), Augment(flip=True), generator).numpy()
    chw = images.transpose(0, 3, 1, 2)
    is_flipped = [
        np.array_equal(f, c[..., ::-1]) and not np.array_equal(f, c)
        for f, c in zip(flipped, chw, strict=True)
    ]
    is_same = [np.array_equal(f, c) for f, c in zip(flipped, chw, strict=True)]
    assert all(a or b for a, b in zip(is_flipped, is_same, strict=True)) and 10 < sum(is_flipped) < 54


def test_augmentation_per_dataset_from_manifest(tmp_path: Path) -> None:
    from anytime.data.digits import materialise_digits

    materialise_digits(tmp_path / "raw")
    write_shards(
        read_dataset("digits", tmp_path / "raw"),
        tmp_path / "s",
        val_fraction=0.1,
        seed=0,
        rows_per_shard=400,
        row_group_rows=50,
    )
    root = str(tmp_path / "s")
    assert ShardDataset(root, "train", batch_size=8, augment=True).augment == Augment(crop_padding=1)
    assert ShardDataset(root, "train", batch_size=8, augment=False).augment is None
    custom = Augment(crop_padding=4, flip=True)
    assert ShardDataset(root, "train", batch_size=8, augment=custom).augment == custom
    x, _ = next(iter(ShardLoader(ShardDataset(root, "val", batch_size=8, augment=True), device="cpu")))
    assert x.shape == (8, 1, 8, 8)


def test_encoded_images_decode_to_image_size(tmp_path: Path) -> None:
    write_imagefolder(tmp_path / "raw", per_class=3)
    raw = read_dataset("imagefolder", tmp_path / "raw", image_size=12)
    write_shards(raw, tmp_path / "s", val_fraction=0.0, seed=0, rows_per_shard=4, row_group_rows=2)
    for augment in (False, True):
        ds = ShardDataset(str(tmp_path / "s"), "train", batch_size=4, augment=augment, shuffle=augment)
        batches = list(ShardLoader(ds, device="cpu"))
        assert [x.shape for x, _ in batches] == [(4, 3, 12, 12), (2, 3, 12, 12)]
        assert all(torch.isfinite(x).all() for x, _ in batches)
        assert sorted(torch.cat([y for _, y in batches]).tolist()) == [0, 0, 0, 1, 1, 1]


def test_reader_errors(numbered: Path, tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"unknown split 'dev'; allowed: train, val, test$"):
        ShardDataset(str(numbered), "dev", batch_size=1)
    with pytest.raises(DataError, match=r"batch_size 0 is invalid: must be >= 1$"):
        ShardDataset(str(numbered), "train", batch_size=0)
    with pytest.raises(DataError, match=r"rank 2 is invalid for world_size 2: must be in 0\.\.1$"):
        ShardDataset(str(numbered), "train", batch_size=1, rank=2, world_size=2)
    with pytest.raises(DataError, match=r"cannot read manifest\.json"):
        ShardDataset(str(tmp_path), "train", batch_size=1)
    with pytest.raises(DataError, match="unsupported shard location"):
        ShardDataset("gs://bucket/x", "train", batch_size=1)


def test_s3_root_reads_same_samples(
    numbered: Path, s3_server: S3Endpoint, monkeypatch: pytest.MonkeyPatch
) -> None:
    bucket = s3_server.make_bucket("shards")
    for path in numbered.rglob("*"):
        if path.is_file():
            s3_server.put(bucket, f"numbered/{path.relative_to(numbered)}", path.read_bytes())
    # an explicit endpoint_url wins over the environment's (here a closed port)
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:1")
    assert (
        load_manifest("s3://shards/numbered", endpoint_url=s3_server.url)["splits"]["train"]["count"] == 103
    )
    explicit = ShardDataset("s3://shards/numbered", "train", batch_size=16, endpoint_url=s3_server.url)
    assert stream(explicit) == list(range(103))
    monkeypatch.setenv("AWS_ENDPOINT_URL", s3_server.url)
    remote = ShardDataset("s3://shards/numbered", "train", batch_size=16, shuffle=True, seed=2)  # the env's
    local = ShardDataset(str(numbered), "train", batch_size=16, shuffle=True, seed=2)
    assert [(batch_indices(x), y.tolist()) for x, y in remote] == [
        (batch_indices(x), y.tolist()) for x, y in local
    ]


def s3_options(root: str, endpoint_url: str | None = None) -> tuple[dict, str]:
    """The options of the pyarrow S3 filesystem ``shard_filesystem`` builds (as pickling records them)."""
    fs, path = shard_filesystem(root, endpoint_url)
    return fs.__reduce__()[1][0], path


def test_s3_endpoint_and_region_come_from_the_argument_then_the_aws_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for key in ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_REGION", "AWS_DEFAULT_REGION"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", "http://127.0.0.1:9001")
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9002")
    options, path = s3_options("s3://bucket/dataX/", "http://127.0.0.1:9000")
    assert (options["endpoint_override"], options["scheme"], path) == (
        "127.0.0.1:9000",
        "http",
        "bucket/dataX",
    )
    assert s3_options("s3://bucket/data")[0]["endpoint_override"] == "127.0.0.1:9001"  # the S3-only variable
    monkeypatch.delenv("AWS_ENDPOINT_URL_S3")
    assert s3_options("s3://bucket/data")[0]["endpoint_override"] == "127.0.0.1:9002"
    options, _ = s3_options("s3://bucket/data", "//127.0.0.1:9003")
    assert (options["endpoint_override"], options["scheme"]) == (
        "127.0.0.1:9003",
        "https",
    )  # no scheme: https
    # AWS_REGION before AWS_DEFAULT_REGION, as boto3 reads them (the AWS C++ SDK alone prefers the other)
    monkeypatch.setenv("AWS_REGION", "eu-west-3")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "ap-south-1")
    assert s3_options("s3://bucket/data")[0]["region"] == "eu-west-3"
    monkeypatch.delenv("AWS_ENDPOINT_URL")
    assert s3_options("s3://bucket/data")[0]["region"] == "eu-west-3"  # AWS itself, no endpoint


def test_a_root_with_a_trailing_slash_is_the_same_root(tmp_path: Path) -> None:
    root = shard(tmp_path / "shardsX", 10, rows_per_shard=5, row_group_rows=5)  # a name ending in X
    assert shard_filesystem(f"{root}/", None)[1] == str(root)
    assert stream(ShardDataset(f"{root}/", "train", batch_size=4)) == list(range(10))
    (root / "manifest.json").write_text("{")
    with pytest.raises(DataError, match="^" + str(root) + r"/manifest\.json: not valid JSON"):
        load_manifest(f"{root}/")


def test_a_manifest_without_augment_reads_with_no_augmentation(numbered: Path, tmp_path: Path) -> None:
    """Manifests written before augmentation was recorded: ``augment=True`` means none."""
    manifest = json.loads((numbered / "manifest.json").read_text())
    del manifest["augment"]
    (tmp_path / "manifest.json").write_text(json.dumps(manifest))
    for path in numbered.iterdir():
        if path.name != "manifest.json":
            (tmp_path / path.name).symlink_to(path)
    assert ShardDataset(str(tmp_path), "train", batch_size=1, augment=True).augment == Augment()


def without(*keys: str):
    return lambda text: json.dumps({k: v for k, v in json.loads(text).items() if k not in keys})


@pytest.mark.parametrize(
    ("damage", "expected"),
    [
        (lambda text: text[: len(text) // 2], r"manifest\.json: not valid JSON"),
        (lambda text: "[1, 2]", r"manifest\.json: not a JSON object"),
        (lambda text: text.replace('"encoding"', '"encodin"'), r"manifest\.json: missing encoding; re-run"),
        (lambda text: text.replace('"test"', '"tset"'), r"manifest\.json: missing splits\.test\.shards"),
        (without("encoding", "std"), r"manifest\.json: missing encoding, std; re-run"),
    ],
)
def test_damaged_manifest_is_one_line_naming_it(tmp_path: Path, damage, expected: str) -> None:
    root = shard(tmp_path / "shards", 10, rows_per_shard=5, row_group_rows=5)
    path = root / "manifest.json"
    path.write_text(damage(path.read_text()))
    with pytest.raises(DataError, match=expected) as info:
        ShardDataset(str(root), "train", batch_size=1)
    assert str(root) in str(info.value) and "\n" not in str(info.value)


def _spawned_rank(rank: int, world_size: int, store: str, shards: str, out: str) -> None:
    """One gloo rank: a reader built with no share given (it takes the process group's, here) and read by
    DataLoader workers started with ``spawn``, which do not see the process group themselves."""
    torch.distributed.init_process_group(
        "gloo", init_method=f"file://{store}", rank=rank, world_size=world_size
    )
    try:
        ds = ShardDataset(shards, "train", batch_size=8, shuffle=True, seed=3)
        loader = ShardLoader(ds, device="cpu", workers=1, multiprocessing_context="spawn")
        Path(out, f"rank{rank}.json").write_text(json.dumps(loader_indices(loader)))
    finally:
        torch.distributed.destroy_process_group()


@pytest.mark.heavy  # two spawned ranks, each spawning a loader worker: four processes importing torch
def test_two_gloo_ranks_under_spawn_each_read_their_own_half(numbered: Path, tmp_path: Path) -> None:
    args = (2, str(tmp_path / "store"), str(numbered), str(tmp_path))
    torch.multiprocessing.spawn(_spawned_rank, args=args, nprocs=2)
    halves = [json.loads((tmp_path / f"rank{rank}.json").read_text()) for rank in range(2)]
    assert sorted(len(half) for half in halves) == [51, 52]
    assert sorted(halves[0] + halves[1]) == list(range(103))  # disjoint, and together the whole split


def _photo(width: int, height: int) -> bytes:
    """A smooth JPEG (gradients plus a disc), so scaled decodes can be compared pixel by pixel."""
    y, x = np.mgrid[0:height, 0:width]
    disc = ((x - width / 2) ** 2 + (y - height / 2) ** 2 < (height / 3) ** 2) * 120
    pixels = np.stack([x * 255 // width, y * 255 // height, disc + 60], axis=-1).astype(np.uint8)
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, format="JPEG", quality=95)
    return out.getvalue()


@pytest.mark.parametrize("train", [False, True])
def test_jpeg_decoded_at_a_reduced_dct_scale_matches_a_full_decode(train: bool) -> None:
    """A 1600x1200 JPEG to 32x32: libjpeg decodes at 1/8 scale (draft) when the crop box allows it; the result
    matches a full-size decode resized over the same box, to a few grey levels."""
    data = _photo(1600, 1200)
    rng = (lambda: np.random.default_rng(7)) if train else (lambda: None)
    fast = decode_encoded(data, 32, rng())
    generator = rng()
    full = Image.open(io.BytesIO(data)).convert("RGB")
    box = _resized_crop_box(1600, 1200, generator) if train else _centre_box(1600, 1200, 32)
    reference = np.asarray(full.resize((32, 32), Image.BILINEAR, box=box))
    assert fast.shape == (32, 32, 3) and fast.dtype == np.uint8
    assert np.abs(fast.astype(int) - reference.astype(int)).mean() < 3
    drafted = Image.open(io.BytesIO(data))
    drafted.draft("RGB", (math.ceil(32 * 1600 / (box[2] - box[0])), math.ceil(32 * 1200 / (box[3] - box[1]))))
    assert drafted.size[0] < 1600  # the scale the decoder was asked for is a reduced one
