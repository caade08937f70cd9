"""The job list: one job per planned render, with a deterministic id.

Pairs run environments outside and objects inside (3DB); within a pair the policy's points in order.
A job's id hashes (experiment fingerprint, environment, object, point index), so reruns, shards,
``--resume`` and joins across runs agree; its seed derives from (run seed, id).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from confidently.render3db.config import Experiment
from confidently.render3db.space import make_policy, search_space
from confidently.run.seeding import derive_seed


@dataclass(frozen=True)
class Job:
    order: int
    id: str
    pair: int
    environment: str
    object: str
    label: int | list[int]
    index: int  # the point's index within its pair
    point: tuple[float, ...]
    discrete: tuple[int, ...]
    args: dict[str, Any]
    seed: int

    def record(self, policy: str, config_sha256: str) -> dict[str, Any]:
        """The record fields every output (dry-run, --no-eval, evaluated) starts with."""
        labels = self.label if isinstance(self.label, list) else [self.label]
        out = {"tool": "render-3db", "id": self.id, "order": self.order, "object": self.object,
               "environment": self.environment, "label": labels[0]}
        if len(labels) > 1:
            out["labels"] = labels
        out.update({"render_args": dict(self.args),
                    "policy": {"module": policy, "point": list(self.point), "discrete": list(self.discrete)},
                    "seed": self.seed, "config_sha256": config_sha256})
        return out


def job_id(config_sha256: str, environment: str, obj: str, index: int) -> str:
    text = f"{config_sha256}:{environment}:{obj}:{index}"
    return hashlib.sha256(text.encode()).hexdigest()[:20]


def pair_seed(policy_seed: int, environment: str, obj: str) -> int:
    return derive_seed(policy_seed, "policy", environment, obj)


def iter_jobs(experiment: Experiment, seed: int) -> Iterator[Job]:
    """Every job of the experiment, in run order (a generator: a huge grid is never held in memory)."""
    space = search_space(experiment.controls)
    policy = make_policy(experiment.policy, space)
    policy_seed = int(experiment.policy.get("seed", seed))
    sha = experiment.sha256(seed)
    order = 0
    for pair, (env, obj) in enumerate(experiment.pairs()):
        for index, (u, d) in enumerate(policy.points(pair_seed(policy_seed, env.id, obj.id))):
            jid = job_id(sha, env.id, obj.id, index)
            yield Job(order=order, id=jid, pair=pair, environment=env.id, object=obj.id, label=obj.label, index=index,
                      point=u, discrete=d, args=space.unpack(u, d), seed=derive_seed(seed, jid))
            order += 1


def count_jobs(experiment: Experiment) -> int:
    """Renders the experiment plans (without listing them when the policy knows its size)."""
    space = search_space(experiment.controls)
    per_pair = make_policy(experiment.policy, space).count()
    if per_pair is not None:
        return per_pair * len(experiment.pairs())
    return sum(1 for _ in iter_jobs(experiment, 0))
