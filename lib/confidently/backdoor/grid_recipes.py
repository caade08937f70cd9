"""The bias-transfer grid's recipes by name: a leaf with no heavy imports, so `plant-backdoor --help` can
list them without loading torch (:mod:`confidently.backdoor.experiment` turns them into training configs)."""

from __future__ import annotations

GRID_RECIPES: dict[str, tuple[str, str]] = {  # grid name → the (source, target) training recipes
    "bias-cpu": ("bias-cpu-source", "bias-cpu-target"),  # the spec's CPU pilot: 8×8 digits, a width-16 CNN
    "bias-thesis": ("bias-thesis-source", "bias-thesis-target"),  # thesis App. G.1.1 / G.1.2, batch sizes as printed
}
