"""Inputs and outputs every tool shares: JSONL records, images, safetensors artifacts and
model files, all written atomically and never unpickled."""

from confidently.io.artifacts import artifact_bytes, load_artifact, save_artifact
from confidently.io.atomic import atomic_write
from confidently.io.images import ImageLoader, load_image, save_image
from confidently.io.model_files import read_model_file, write_model_file
from confidently.io.records import RecordReader, RecordWriter, error_record, read_records

__all__ = [
    "ImageLoader", "RecordReader", "RecordWriter", "artifact_bytes", "atomic_write", "error_record",
    "load_artifact", "load_image", "read_model_file", "read_records", "save_artifact", "save_image",
    "write_model_file",
]
