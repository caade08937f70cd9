"""The config a training run writes beside its model file, as timm's ``train.py`` leaves ``args.yaml`` beside
its run: for ``--out robust.safetensors``, ``robust.config.yaml``.

The file is a ``--config`` file of the command that wrote it: its top-level keys are the options the user set for
the run (on the command line or by ``--config``; not ``--force``, ``--resume``, ``-q`` and ``-v``, which say how
this run treated files already there and how much it said), so ``advtrain train --config robust.config.yaml``
trains the same model again, and flags given with it win as usual. Everything else the run resolved is under one
key, ``confidently``, which ``--config`` skips: the tool, the command, the version, every option's effective value
(what ``--print-config`` shows), the training recipe of each stage, the data (sources, splits, counts,
fingerprints), the seed and the model. It is written atomically, guarded like the model file (never over a file the
tool did not write, unless ``--force``), rewritten when a run starts or resumes, and kept with the model file.
"""

from __future__ import annotations

import json
import os
from collections.abc import Collection, Mapping
from pathlib import Path
from typing import Any

RESOLVED = "confidently"  # the key of what the run resolved; --config skips it
NOT_REPEATED = frozenset({"force", "resume", "quiet", "verbose"})  # how this run went, not what it trains


def config_path(out: str | os.PathLike) -> Path:
    """Where the run writing ``out`` writes its config: ``robust.safetensors`` → ``robust.config.yaml``."""
    out = Path(out)
    return out.with_name(f"{out.stem or out.name}.config.yaml")


def _plain(value: Any) -> Any:
    """``value`` as plain YAML/JSON data (paths and other objects become strings, tuples lists)."""
    return json.loads(json.dumps(value, default=str))


def config_text(*, tool: str, command: str, options: Mapping[str, Any] | None, explicit: Collection[str],
                resolved: Mapping[str, Any], out: str | os.PathLike) -> str:
    """The file's text: a comment saying what it is, the options set for the run, then the ``confidently`` block
    (``tool``, ``command``, ``options``: every option's effective value, and ``resolved``'s keys)."""
    import yaml

    options = _plain(dict(options or {}))
    repeated = {name: value for name, value in options.items() if name in explicit and name not in NOT_REPEATED}
    block = {"tool": tool, "command": command, **({"options": options} if options else {}), **_plain(dict(resolved))}
    name = config_path(out).name
    header = (f"# Written by `{command}` beside {Path(out).name}: the options set for this run. `{command} "
              f"--config {name}`\n# trains it again (flags given with it win). What the run resolved is under "
              f"`{RESOLVED}:`, which --config skips.\n")
    body = yaml.safe_dump(repeated, sort_keys=True) if repeated else ""
    return header + body + yaml.safe_dump({RESOLVED: block}, sort_keys=False)


def write_config(path: str | os.PathLike, text: str) -> None:
    """Write the config file atomically (a reader sees the old file or the whole new one)."""
    from confidently.io.atomic import write_bytes_atomic

    write_bytes_atomic(path, text.encode())
