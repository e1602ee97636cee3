"""Starting Ray: a local start that times out once is tried again; a second failure, or a
cluster address that cannot be joined, is one typed error (no Ray needed: a fake stands in)."""

from __future__ import annotations

import pytest

from fedpharma.core.errors import FedPharmaError
from fedpharma.sim.ray_backend import LOCAL_START_TRIES, start_ray


class FakeRay:
    """``init`` fails its first ``failures`` calls as Ray 2.x does when its node is slow."""

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.inits = 0
        self.shutdowns = 0

    def init(self, **kwargs: object) -> None:
        self.inits += 1
        if self.inits <= self.failures:
            raise Exception("The current node timed out during startup.")

    def shutdown(self) -> None:
        self.shutdowns += 1


def test_a_local_start_that_times_out_once_is_tried_again():
    ray = FakeRay(failures=1)
    start_ray(ray, None)
    assert (ray.inits, ray.shutdowns) == (2, 1)


def test_a_local_start_that_keeps_failing_is_one_typed_error():
    ray = FakeRay(failures=LOCAL_START_TRIES)
    with pytest.raises(FedPharmaError, match=r'start a local Ray.*backend = "processes"'):
        start_ray(ray, None)
    assert ray.inits == LOCAL_START_TRIES


def test_a_cluster_that_cannot_be_joined_is_not_tried_again():
    ray = FakeRay(failures=1)
    with pytest.raises(FedPharmaError, match="join the Ray cluster at ray://head:10001"):
        start_ray(ray, "ray://head:10001")
    assert ray.inits == 1
