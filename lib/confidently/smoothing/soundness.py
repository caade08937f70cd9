"""The soundness check: real patches against certified images. A certificate is a proof, so no placement and
no content of an m×m patch may change a certified prediction; one that does shows a bug in the geometry, the
vote or the token dropping (``certify check``, a CI smoke test)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from confidently.run.console import progress
from confidently.run.seeding import record_generator
from confidently.smoothing.ablation import patch_attack, patch_contents
from confidently.smoothing.certify import Certifier


def check_soundness(certifier: Certifier, images: Sequence[torch.Tensor], visible: Sequence[torch.Tensor],
                    ids: Sequence[str], labels: Sequence[int | None], patch_size: int, contents: Sequence[str],
                    positions: int = 0, seed: int = 0) -> list[dict[str, Any]]:
    """One report per image: ``{"patch", "certified", "pred"}``, and for a certified image the ``placements``
    tried, the ``contents`` pasted, the first ``flips`` (up to 10) and whether it ``flipped``.

    ``positions`` random placements per image (0: every one), and the ``noise`` content, come from (seed,
    its id); ``swap`` pastes the region of another image labelled as the runner-up class (the nearest
    confusion), so the check needs labelled images for it.
    """
    model, certificates = certifier.model, certifier.certificates
    device = model.normalize.mean.device
    channels, height, width = model.input_size
    votes, base = certifier.votes_and_base(torch.stack(list(images)), torch.stack(list(visible)))
    reports = []
    results = certificates.results(votes, base, list(labels))
    for index, result in enumerate(progress(results, len(images), "soundness check")):
        report: dict[str, Any] = {"patch": patch_size, "certified": result["certified"][str(patch_size)],
                                  "pred": result["pred"]}
        if report["certified"]:
            donor = next((images[j] for j, label in enumerate(labels) if label == result["runner_up"]
                          and j != index), None)
            generator = record_generator(seed, ids[index])
            fillers = patch_contents(list(contents), patch_size, channels, generator, donor)
            places = None
            if positions:
                rows = torch.randint(0, height - patch_size + 1, (positions,), generator=generator).tolist()
                cols = torch.randint(0, width - patch_size + 1, (positions,), generator=generator).tolist()
                places = list(zip(rows, cols, strict=True))
            flips = patch_attack(model, images[index].to(device), votes[index], certificates.ablation, patch_size,
                                 fillers, places, drop_tokens=certificates.drop_tokens, theta=certifier.theta,
                                 batch_size=certifier.batch_size, visible=visible[index].to(device))
            report.update(placements=len(places) if places else (height - patch_size + 1) * (width - patch_size + 1),
                          contents=sorted(fillers), flips=flips[:10], flipped=bool(flips))
        reports.append(report)
    return reports
