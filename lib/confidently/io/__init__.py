"""Inputs and outputs every tool shares: JSONL records, images, safetensors artifacts and
model files, all written atomically and never unpickled."""

from confidently._lazy import lazy_exports

__getattr__, __dir__, __all__ = lazy_exports(__name__, {
    "artifact_bytes": "confidently.io.artifacts",
    "load_artifact": "confidently.io.artifacts",
    "save_artifact": "confidently.io.artifacts",
    "atomic_write": "confidently.io.atomic",
    "ImageLoader": "confidently.io.images",
    "load_image": "confidently.io.images",
    "save_image": "confidently.io.images",
    "read_model_file": "confidently.io.model_files",
    "write_model_file": "confidently.io.model_files",
    "RecordReader": "confidently.io.records",
    "RecordWriter": "confidently.io.records",
    "error_record": "confidently.io.records",
    "read_records": "confidently.io.records",
})
