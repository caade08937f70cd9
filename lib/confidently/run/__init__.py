"""Running work: seeds per (seed, id), devices and OOM back-off, progress on stderr,
``--shard i/N``, and engines (serial, Ray) that return identical results."""

from confidently.run.console import configure_logging, console, logger, progress
from confidently.run.device import resolve_device, with_batch_backoff
from confidently.run.engines import create_engine, list_engines, register_engine
from confidently.run.seeding import derive_seed, record_generator, seed_everything
from confidently.run.shard import Shard

__all__ = [
    "Shard", "configure_logging", "console", "create_engine", "derive_seed", "list_engines", "logger", "progress",
    "record_generator", "register_engine", "resolve_device", "seed_everything", "with_batch_backoff",
]
