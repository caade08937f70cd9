"""Datasets from any source (manifest, image folder, safetensors shard, ``demo:*``, tar shards), batched
transforms, one shared corruption set, and seeded splits."""

from confidently._lazy import lazy_exports

__getattr__, __dir__, __all__ = lazy_exports(__name__, {
    "corrupt": "confidently.data.corruptions",
    "list_corruptions": "confidently.data.corruptions",
    "register_corruption": "confidently.data.corruptions",
    "ImageDataset": "confidently.data.dataset",
    "list_demos": "confidently.data.demo",
    "load_demo": "confidently.data.demo",
    "register_demo": "confidently.data.demo",
    "Source": "confidently.data.source",
    "check_labels": "confidently.data.source",
    "open_dataset": "confidently.data.source",
    "open_source": "confidently.data.source",
    "split_by_class": "confidently.data.splits",
    "split_records": "confidently.data.splits",
})
