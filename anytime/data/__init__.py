"""Datasets: original formats, sources (path/http/s3), safe archives, Parquet shards and the reader."""

from anytime.data.dataset import RawDataset, Split
from anytime.data.digits import materialise_digits
from anytime.data.errors import DataError
from anytime.data.formats import DATASETS, read_dataset
from anytime.data.loader import ShardLoader
from anytime.data.reader import ShardDataset, load_manifest
from anytime.data.shards import write_shards
from anytime.data.sources import evict, fetch_file, fetch_into, location_kind
from anytime.data.transforms import Augment, BatchTransform, decode_batch, default_augment, prepare_batch
from anytime.data.validate import check_decodable, write_checked_shards

__all__ = [
    "DATASETS",
    "Augment",
    "BatchTransform",
    "DataError",
    "RawDataset",
    "ShardDataset",
    "ShardLoader",
    "Split",
    "check_decodable",
    "decode_batch",
    "default_augment",
    "evict",
    "fetch_file",
    "fetch_into",
    "load_manifest",
    "location_kind",
    "materialise_digits",
    "prepare_batch",
    "read_dataset",
    "write_checked_shards",
    "write_shards",
]
