"""Label statistics as their own task: pooled sums, and a site requiring DP keeps its labels."""

import numpy as np

from fedpharma.core.config import SitePolicyConfig
from fedpharma.core.dataset import Dataset, SiteData
from fedpharma.core.protocol import LabelStatisticsResult, LabelStatisticsTask, Refusal
from fedpharma.server.label_statistics import gather_label_statistics
from fedpharma.site.policy import SitePolicy
from fedpharma.site.runtime import SiteRuntime
from fedpharma.transport.inprocess import InProcessChannel


def _data(labels: np.ndarray) -> Dataset:
    n = len(labels)
    return Dataset(
        features=np.zeros((n, 2), dtype=np.float32),
        labels=labels.astype(np.float32),
        task="regression",
        task_names=("a", "b"),
        groups=np.arange(n),
    )


LABELS = {
    "site-1": np.array([[1.0, np.nan], [2.0, 4.0]]),
    "site-2": np.array([[3.0, 5.0], [np.nan, 7.0], [6.0, 9.0]]),
}


def _site(name, labels, policy=None):
    return SiteRuntime(name, SiteData(_data(labels), _data(labels)), trainer=None, policy=policy)


def test_pooled_label_statistics_are_the_statistics_of_the_pooled_labels():
    channel = InProcessChannel({name: _site(name, labels) for name, labels in LABELS.items()})
    stats = gather_label_statistics(channel, "run", n_tasks=2)
    pooled = np.concatenate(list(LABELS.values()))
    assert stats is not None and stats.sites == ("site-1", "site-2")
    np.testing.assert_allclose(stats.count, [4, 4])
    np.testing.assert_allclose(stats.mean, np.nanmean(pooled, axis=0), rtol=1e-6)
    np.testing.assert_allclose(stats.std, np.nanstd(pooled, axis=0), rtol=1e-6)


def test_a_site_requiring_dp_refuses_and_is_left_out(tmp_path):
    strict = SitePolicy(SitePolicyConfig(require_dp=True), tmp_path / "ledger.sqlite")
    sites = {"site-1": _site("site-1", LABELS["site-1"])}
    sites["site-2"] = _site("site-2", LABELS["site-2"], policy=strict)
    reply = sites["site-2"].handle(LabelStatisticsTask("run", 0))
    assert isinstance(reply, Refusal) and "unaccounted release" in reply.reason
    # the twin without the requirement sends its sums
    assert isinstance(
        _site("x", LABELS["site-2"]).handle(LabelStatisticsTask("run", 0)), LabelStatisticsResult
    )
    stats = gather_label_statistics(InProcessChannel(sites), "run", n_tasks=2)
    assert stats is not None and stats.sites == ("site-1",)
    np.testing.assert_allclose(stats.count, [2, 1])
