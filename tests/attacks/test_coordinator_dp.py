"""An active coordinator attacks the sites' DP (issue 12: review items 1, 4, 6, and replays).

Each attack drives real site runtimes through the wire codec (``dp_coordinator``) and must fail
to learn its target; its weakened twin — the same site with one protection removed — shows the
same attack succeeding, so each test can fail.
"""

import dataclasses

import numpy as np
import pytest

from fedpharma.core.config import SitePolicyConfig
from fedpharma.core.protocol import (
    EvaluateResult,
    EvaluateTask,
    LocalTraining,
    RecordDP,
    Refusal,
    SiteDP,
    TrainResult,
    TrainSettings,
    TrainTask,
)
from fedpharma.site import policy as site_policy
from fedpharma.site.runtime import SiteRuntime
from tests.attacks.dp_coordinator import (
    MaliciousCoordinator,
    constant_model,
    hospital,
    label_mean_and_std,
    plain_trainer,
    records,
)

N_KNOWN = 40
SEED = 1234  # the seed the coordinator puts in the task, and therefore knows


def _record_dp_task(rnd: int) -> TrainTask:
    settings = TrainSettings(
        LocalTraining(epochs=1, seed=SEED),
        record_dp=RecordDP(max_grad_norm=1.0, delta=1e-5, planned_rounds=1, noise_multiplier=1.0),
    )
    return TrainTask("attack", rnd, plain_trainer().initial_parameters(0), settings)


def _membership_guesses(tmp_path, *, secure_mode: bool) -> dict[bool, bool | None]:
    """The attacker's verdict on the target record, in a world where it is in the site's data
    and in one where it is not."""
    with_target = records(N_KNOWN + 1)
    known = with_target.subset(np.arange(N_KNOWN))
    guesses = {}
    for member, data in ((True, with_target), (False, known)):
        folder = tmp_path / str(member)
        folder.mkdir()
        site = hospital(folder, data, secure_mode=secure_mode)
        coordinator = MaliciousCoordinator()
        task = _record_dp_task(1)
        reply = coordinator.send(site, task)
        assert isinstance(reply, TrainResult), reply
        guesses[member] = coordinator.membership_by_seed_replay(reply, task, known, with_target)
    return guesses


def test_knowing_the_seed_does_not_reveal_dp_sgd_noise_or_membership(tmp_path):
    # The deployed site draws DP-SGD sampling and noise from the OS CSPRNG: replaying the
    # training with the seed the coordinator sent matches neither world.
    assert _membership_guesses(tmp_path, secure_mode=True) == {True: None, False: None}


def test_weakened_twin_seeded_dp_sgd_noise_reveals_membership_with_certainty(tmp_path):
    # The same site with seeded noise (simulation's mode): the replay finds the world every time.
    assert _membership_guesses(tmp_path, secure_mode=False) == {True: True, False: False}


def _distributed_noise_without_secure_aggregation(tmp_path) -> tuple[SiteRuntime, TrainTask]:
    site = hospital(tmp_path, records(200))
    k = 10  # the coordinator claims ten sites share the noise
    site_dp = SiteDP(1.0, 1.0, planned_sites=k, min_sites=k, placement="distributed")
    start = plain_trainer().initial_parameters(0)
    task = TrainTask("attack", 1, start, TrainSettings(LocalTraining(1, SEED), site_dp=site_dp))
    return site, task


def _true_clipped_update(site: SiteRuntime, task: TrainTask) -> np.ndarray:
    """What the site computed before noise (the judge's knowledge, not the attacker's)."""
    trained = plain_trainer().fit(task.parameters, site.data.train, epochs=1, seed=SEED)
    update = trained.parameters.minus(task.parameters).flatten()
    return update * min(1.0, 1.0 / np.linalg.norm(update))


def test_distributed_noise_without_secure_aggregation_is_refused(tmp_path):
    site, task = _distributed_noise_without_secure_aggregation(tmp_path)
    reply = MaliciousCoordinator().send(site, task)
    assert isinstance(reply, Refusal) and "needs secure aggregation" in reply.reason
    assert not site.policy.ledger.entries()  # nothing released, nothing charged


def test_weakened_twin_without_the_guard_sends_an_update_under_a_tenth_of_the_noise(
    tmp_path, monkeypatch
):
    monkeypatch.setattr(site_policy, "noise_placement_problems", lambda settings: [])
    site, task = _distributed_noise_without_secure_aggregation(tmp_path)
    reply = MaliciousCoordinator().send(site, task)
    assert isinstance(reply, TrainResult)
    error = reply.update.flatten() - _true_clipped_update(site, task)
    # The ledger charged noise σC = 1 on the sum; this one update carries σC/√10 ≈ 0.32.
    assert error.std() == pytest.approx(1 / np.sqrt(10), rel=0.25)
    assert site.policy.ledger.entries()


def _read_label_statistics(tmp_path) -> list[EvaluateResult | Refusal]:
    site = hospital(
        tmp_path, records(60), policy=SitePolicyConfig(site_epsilon=10.0, require_dp=True)
    )
    coordinator = MaliciousCoordinator()
    replies = [
        coordinator.send(site, EvaluateTask("attack", 1, constant_model(c))) for c in (0.0, 1.0)
    ]
    for reply in replies:
        assert isinstance(reply, EvaluateResult | Refusal)
    return replies


def test_evaluate_tasks_cannot_read_label_statistics_under_a_dp_policy(tmp_path):
    replies = _read_label_statistics(tmp_path)
    assert all(isinstance(r, Refusal) and r.kind == "policy" for r in replies)


def test_weakened_twin_evaluating_constant_models_reads_the_label_mean_and_std(
    tmp_path, monkeypatch
):
    monkeypatch.setattr(SiteRuntime, "_refuse_unaccounted", lambda self, release: None)
    at_zero, at_one = _read_label_statistics(tmp_path)
    assert isinstance(at_zero, EvaluateResult) and isinstance(at_one, EvaluateResult)
    labels = records(60).labels[:, 0].astype(np.float64)
    mean, std = label_mean_and_std(at_zero, at_one)
    assert mean == pytest.approx(labels.mean(), abs=1e-4)
    assert std == pytest.approx(labels.std(), rel=1e-4)


def _replay(site: SiteRuntime, times: int, *, vary: bool = False) -> list[TrainResult]:
    """The coordinator replays one record-level task to average its answers' noise away; with
    ``vary`` each copy carries another local seed, so it is not the same task."""
    coordinator, task = MaliciousCoordinator(), _record_dp_task(1)
    tasks = [
        dataclasses.replace(
            task,
            settings=dataclasses.replace(
                task.settings, local=dataclasses.replace(task.settings.local, seed=SEED + i)
            ),
        )
        if vary
        else task
        for i in range(times)
    ]
    replies = [coordinator.send(site, t) for t in tasks]
    return [r for r in replies if isinstance(r, TrainResult)]


def test_replaying_a_task_is_answered_with_the_same_release_charged_once(tmp_path):
    # A retried round sends the very same task (tests/site/test_retry_charge.py): the site
    # answers with the release it already sent, so there is no second noising to average.
    policy = SitePolicyConfig(record_epsilon=10.0)
    site = hospital(tmp_path, records(N_KNOWN), policy=policy)
    answered = _replay(site, 10)
    assert len(answered) == 10 and len(site.policy.ledger.entries()) == 1
    assert len({r.update.flatten().tobytes() for r in answered}) == 1


def test_a_varied_replay_is_charged_every_time_until_the_budget_refuses(tmp_path):
    policy = SitePolicyConfig(record_epsilon=10.0)
    site = hospital(tmp_path, records(N_KNOWN), policy=policy)
    answered = _replay(site, 10, vary=True)
    # Each answer is charged (ε ≈ 5.2, 8.1, 10.2 after 1, 3, 5): the budget stops the averaging.
    assert 0 < len(answered) < 10
    assert len(site.policy.ledger.entries()) == len(answered)
    assert site.policy.ledger.spent("record").epsilon <= 10.0


def test_weakened_twin_charging_a_round_once_answers_every_replay(tmp_path, monkeypatch):
    policy = SitePolicyConfig(record_epsilon=10.0)
    site = hospital(tmp_path, records(N_KNOWN), policy=policy)
    charged: dict[tuple[str, int], dict] = {}
    admit = site.policy.admit

    def once_per_round(settings, record_event, run_id, rnd):
        if (run_id, rnd) not in charged:
            charged[run_id, rnd] = admit(settings, record_event, run_id, rnd)
        return charged[run_id, rnd]

    monkeypatch.setattr(site.policy, "admit", once_per_round)
    answered = _replay(site, 10, vary=True)
    assert len(answered) == 10 and len(site.policy.ledger.entries()) == 1
    # Ten independent noisings of one update for the price of one: their mean carries 1/√10 of
    # the noise the ledger charged.
    assert len({r.update.flatten().tobytes() for r in answered}) == 10
