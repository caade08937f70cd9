"""confidently: methods for vision models you can deploy with confidence.

The library is what a Python user imports; the command-line tools in ``tools/`` are thin
layers over it. Submodules: ``io`` (records, tensors, images, model files), ``data``
(datasets, transforms, corruptions), ``models`` (registry, tiny archs, token dropping),
``run`` (seeding, devices, sharding, engines) and ``cli`` (the shared command-line skeleton).
"""

__version__ = "0.1.0"
