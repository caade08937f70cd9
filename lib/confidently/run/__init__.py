"""Running work: seeds per (seed, id), devices and OOM back-off, progress on stderr,
``--shard i/N``, and engines (serial, Ray) that return identical results."""

from confidently._lazy import lazy_exports

__getattr__, __dir__, __all__ = lazy_exports(__name__, {
    "configure_logging": "confidently.run.console",
    "console": "confidently.run.console",
    "logger": "confidently.run.console",
    "progress": "confidently.run.console",
    "resolve_device": "confidently.run.device",
    "with_batch_backoff": "confidently.run.device",
    "create_engine": "confidently.run.engines",
    "list_engines": "confidently.run.engines",
    "register_engine": "confidently.run.engines",
    "derive_seed": "confidently.run.seeding",
    "record_generator": "confidently.run.seeding",
    "seed_everything": "confidently.run.seeding",
    "Shard": "confidently.run.shard",
})
