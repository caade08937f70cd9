"""Datasets from any source (manifest, image folder, safetensors shard, ``demo:*``, tar shards), batched
transforms, one shared corruption set, and seeded splits."""

from confidently.data.corruptions import corrupt, list_corruptions, register_corruption
from confidently.data.dataset import ImageDataset
from confidently.data.demo import list_demos, load_demo, register_demo
from confidently.data.source import Source, check_labels, open_dataset, open_source
from confidently.data.splits import split_by_class, split_records

__all__ = [
    "ImageDataset", "Source", "check_labels", "corrupt", "list_corruptions", "list_demos", "load_demo", "open_dataset",
    "open_source", "register_corruption", "register_demo", "split_by_class", "split_records",
]
