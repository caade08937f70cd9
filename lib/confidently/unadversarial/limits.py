"""Limits the unadversarial commands quote in their help: a leaf with no heavy imports, so `unadv-patch --help`
loads no torch."""

from __future__ import annotations

MAX_BACKGROUNDS = 256  # texture backgrounds read from a dataset: at most this many images, a seeded sample
