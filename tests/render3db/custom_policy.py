"""A custom policy for the tests (``py:tests.render3db.custom_policy:Corners``): every corner of the cube."""

import itertools


class Corners:
    def __init__(self, continuous_dim, discrete_sizes, repeat=1):
        self.dim, self.sizes, self.repeat = continuous_dim, discrete_sizes, repeat

    def batches(self, seed):
        corners = [(u, tuple(0 for _ in self.sizes)) for u in itertools.product((0.0, 1.0), repeat=self.dim)]
        for _ in range(self.repeat):
            yield corners

    def count(self):
        return self.repeat * 2 ** self.dim
