"""The join check in a run: a site whose preprocessing differs from the recipe's is refused at
join with the differing setting named, the others train on; hostile descriptions are refused
with typed errors and never stop the coordinator."""

from __future__ import annotations

import dataclasses
import sqlite3
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pytest

from fedpharma.core.config import RunConfig, config_from_dict
from fedpharma.core.dataset import dense
from fedpharma.core.deploy_config import SiteConfig, SiteDataConfig, SiteSection
from fedpharma.core.params import Parameters
from fedpharma.core.protocol import (
    DescribeTask,
    DescriptionReply,
    Failure,
    Refusal,
    Reply,
    Task,
    TrainResult,
    TrainTask,
)
from fedpharma.core.protocol.codec import decode_message
from fedpharma.data.permutation import (
    FingerprintPermutation,
    load_permutation_key,
    write_permutation_key,
)
from fedpharma.data.preprocessing import SiteDescription
from fedpharma.server.join import (
    REFUSED_KIND,
    JoinCheck,
    JoinGate,
    JoinLog,
    JoinOutcome,
    expected_preprocessing,
)
from fedpharma.server.plan import build_federation
from fedpharma.server.round import RoundRecord
from fedpharma.server.store import RunStore
from fedpharma.site.deploy import build_site, load_site_data
from fedpharma.transport.inprocess import InProcessChannel

SITES = ("site-1", "site-2", "site-3")
N_REF = 32  # a small public reference set keeps the checks fast


def recipe_for(data: Path, **features: object) -> RunConfig:
    return config_from_dict(
        {
            "rounds": 1,
            "seed": 3,
            "baselines": False,
            "dataset": {"path": str(data), "label_columns": ["pIC50"], "task": "regression"},
            "features": {"radius": 2, "n_bits": 128, **features},
            "partition": {"n_sites": 3},
            "model": {"hidden": [16]},
            "training": {"batch_size": 16},
            "strategy": {"min_sites": 2},
        }
    )


def site_config(data: Path, index: int, state: Path) -> SiteConfig:
    return SiteConfig(
        state_dir=str(state / f"site-{index}"),
        site=SiteSection(name=f"site-{index}", insecure=True),
        data=SiteDataConfig(
            path=str(data), label_columns=("pIC50",), task="regression", partition_index=index
        ),
    )


class Recording:
    """A site handler that notes the type of every task it is sent."""

    def __init__(self, runtime: object) -> None:
        self.runtime = runtime
        self.seen: list[str] = []

    def handle_encoded(self, data):
        self.seen.append(type(decode_message(data)).__name__)
        return self.runtime.handle_encoded(data)


def test_a_site_with_another_fingerprint_radius_is_refused_at_join_and_the_others_train(
    molecules_csv, tmp_path
):
    run = recipe_for(molecules_csv)
    # Each deployed site featurizes by its own copy of the recipe: site-3's says radius 3.
    own = {"site-1": run, "site-2": run, "site-3": recipe_for(molecules_csv, radius=3)}
    handlers = {
        name: Recording(build_site(name, site_config(molecules_csv, i, tmp_path), own[name]))
        for i, name in enumerate(SITES, start=1)
    }
    store = RunStore.create(tmp_path / "run.sqlite", "run-1", run.to_dict())
    lines: list[str] = []
    outcomes: list[JoinOutcome] = []
    log = JoinLog(store, lines.append)

    def observe(batch):
        outcomes.extend(batch)
        log(batch)

    gate = JoinGate(
        InProcessChannel(handlers), "run-1", expected_preprocessing(run), on_outcome=observe
    )
    records: list[RoundRecord] = []

    class Keep:
        def on_round(self, record: RoundRecord) -> None:
            records.append(record)

    federation = build_federation(
        run, planned_sites=3, noise_rng=np.random.default_rng(0), store=store, observers=[Keep()]
    )
    initial = handlers["site-1"].runtime.trainer.initial_parameters(0)
    federation.run(gate, initial, run.rounds, run_id="run-1")
    store.close()

    assert [r.contributors for r in records] == [("site-1", "site-2")]
    assert set(records[0].evaluate_results) == {"site-1", "site-2"}
    (refused,) = [o for o in outcomes if not o.admitted]
    assert refused.site == "site-3"
    assert 'site "site-3" uses fingerprint radius (radius) 3' in refused.reason
    assert "set [features] radius = 2" in refused.reason
    assert {o.site for o in outcomes if o.admitted} == {"site-1", "site-2"}
    assert len(outcomes) == 3  # each site described once, not at every listing
    assert handlers["site-3"].seen == ["DescribeTask"]  # it never saw a model or a task
    assert handlers["site-1"].seen.count("DescribeTask") == 1
    assert "TrainTask" in handlers["site-1"].seen
    text = "\n".join(lines)
    assert "preprocessing checked: site-1, site-2 admitted" in text
    assert 'site site-3 refused at join: site "site-3" uses fingerprint radius' in text
    with sqlite3.connect(tmp_path / "run.sqlite") as db:
        incidents = db.execute("SELECT round, site, kind, reason FROM incidents").fetchall()
    assert [(r, s, k) for r, s, k, _ in incidents] == [(0, "site-3", REFUSED_KIND)]
    assert "radius" in incidents[0][3]


# ----- hostile and odd answers ---------------------------------------------------------------


class Scripted:
    """A fake channel whose sites answer a DescribeTask as scripted (a reply or a Failure)."""

    def __init__(self, answers: Mapping[str, object]) -> None:
        self.answers = dict(answers)
        self.connected = tuple(sorted(answers))
        self.sent: list[tuple[str, str]] = []

    def available_sites(self) -> tuple[str, ...]:
        return self.connected

    def exchange(
        self, tasks: Mapping[str, Task], timeout: float | None = None
    ) -> dict[str, Reply | Failure]:
        out: dict[str, Reply | Failure] = {}
        for site, task in tasks.items():
            self.sent.append((site, type(task).__name__))
            answer = self.answers[site]
            if isinstance(task, DescribeTask) and callable(answer):
                answer = answer(task)
            elif not isinstance(task, DescribeTask):
                answer = Refusal(task.run_id, task.round, site, "policy", "ok")
            out[site] = answer  # type: ignore[assignment]
        return out


@pytest.fixture(scope="module")
def good() -> SiteDescription:
    return SiteDescription.of_site(recipe_for(Path("x.csv")).features, n_molecules=N_REF)


def honest(site: str, description: str):
    return lambda task: DescriptionReply(task.run_id, task.round, site, description)


def hostile_answers(good: SiteDescription) -> dict[str, object]:
    text = good.to_json()
    return {
        "not-json": honest("not-json", "{not json"),
        "huge": honest("huge", " " * 100_000),
        "nan": honest("nan", text.replace('"radius":2', '"radius":NaN')),
        "bad-digest": honest("bad-digest", text.replace(good.reference_digest, "zz" * 32)),
        "extra-key": honest("extra-key", text[:-1] + ',"sneaky":1}'),
        "impostor": honest("site-1", text),  # written in another site's name
        "stale": lambda task: DescriptionReply("other-run", task.round, "stale", text),
        "wrong-type": lambda task: TrainResult(task.run_id, task.round, "wrong-type", None, 1),
    }


def test_hostile_descriptions_are_refused_with_typed_errors_and_the_honest_site_admitted(good):
    answers = hostile_answers(good) | {"honest": honest("honest", good.to_json())}
    outcomes: list[JoinOutcome] = []
    gate = JoinGate(
        Scripted(answers),
        "run-1",
        JoinCheck(SiteDescription.expected(recipe_for(Path("x.csv")).features, n_molecules=N_REF)),
        on_outcome=outcomes.extend,
    )
    assert gate.available_sites() == ("honest",)
    reasons = {o.site: o.reason for o in outcomes if not o.admitted}
    assert set(reasons) == set(answers) - {"honest"}
    for site, reason in reasons.items():
        assert reason.startswith(f"site {site!r} sent an unusable preprocessing description"), (
            site,
            reason,
        )
    assert "not valid JSON" in reasons["not-json"]
    assert "too large" in reasons["huge"]
    assert "64 lowercase hex digits" in reasons["bad-digest"]
    assert "unknown key 'sneaky'" in reasons["extra-key"]
    assert "in the name of 'site-1'" in reasons["impostor"]
    assert "stale or replayed" in reasons["stale"]
    assert "answered with a TrainResult" in reasons["wrong-type"]


def test_a_site_of_an_older_release_or_without_molecules_is_refused_with_its_reason(good):
    answers = {
        # what a site answers a message type it does not know (see SiteRuntime.handle_encoded)
        "old": Refusal("", 0, "old", "invalid-task", "unknown message type\nINJECTED line"),
        "tabular": lambda task: Refusal(
            task.run_id, task.round, "tabular", "error", "this site holds no molecule data"
        ),
    }
    outcomes: list[JoinOutcome] = []
    gate = JoinGate(Scripted(answers), "r", JoinCheck(good), on_outcome=outcomes.extend)
    assert gate.available_sites() == ()
    reasons = {o.site: o.reason for o in outcomes}
    assert (
        "did not describe its preprocessing (invalid-task: 'unknown message type\\n"
        in (reasons["old"])
    )
    assert "\n" not in reasons["old"]
    assert "holds no molecule data" in reasons["tabular"]


def test_a_silent_site_gets_no_verdict_and_is_asked_again(good):
    answers: dict[str, object] = {"slow": Failure("slow", "no answer within the deadline")}
    channel = Scripted(answers)
    outcomes: list[JoinOutcome] = []
    gate = JoinGate(channel, "r", JoinCheck(good), on_outcome=outcomes.extend)
    assert gate.available_sites() == () and outcomes == []
    channel.answers["slow"] = honest("slow", good.to_json())
    assert gate.available_sites() == ("slow",)
    assert [o.admitted for o in outcomes] == [True]
    assert gate.available_sites() == ("slow",)
    assert channel.sent == [("slow", "DescribeTask")] * 2  # asked twice, then remembered


def test_a_site_that_leaves_and_comes_back_is_checked_again(good):
    channel = Scripted({"a": honest("a", good.to_json())})
    gate = JoinGate(channel, "r", JoinCheck(good))
    assert gate.available_sites() == ("a",)
    channel.connected = ()
    assert gate.available_sites() == ()
    channel.connected = ("a",)
    channel.answers["a"] = honest("a", "garbage")  # restarted with something else
    assert gate.available_sites() == ()
    assert [s for s, kind in channel.sent if kind == "DescribeTask"] == ["a", "a"]


def test_a_site_that_rejoins_between_two_looks_is_checked_again(good):
    channel = Scripted({"a": honest("a", good.to_json())})
    connection = {"a": 1}
    gate = JoinGate(channel, "r", JoinCheck(good), connection_of=connection.__getitem__)
    assert gate.available_sites() == ("a",)
    assert gate.available_sites() == ("a",)  # same connection: the verdict is kept
    connection["a"] = 2  # left and joined again, never seen absent
    channel.answers["a"] = honest("a", "garbage")  # restarted with something else
    assert gate.available_sites() == ()
    assert [s for s, kind in channel.sent if kind == "DescribeTask"] == ["a", "a"]


def test_a_refused_site_is_dismissed_with_the_reason_and_gets_no_task(good):
    wrong = dataclasses.replace(good, recipe={**good.recipe, "n_bits": 4096})
    channel = Scripted({"a": honest("a", good.to_json()), "b": honest("b", wrong.to_json())})
    dismissed: list[tuple[str, str]] = []
    gate = JoinGate(channel, "r", JoinCheck(good), dismiss=lambda s, r: dismissed.append((s, r)))
    assert gate.available_sites() == ("a",)
    ((site, why),) = dismissed
    assert site == "b" and why.startswith("refused at join: ") and "n_bits" in why
    task = TrainTask("r", 1, Parameters(("w",), (np.zeros(2, np.float32),)))
    replies = gate.exchange({"a": task, "b": task})
    assert isinstance(replies["b"], Failure) and "not admitted" in replies["b"].reason
    assert ("b", "TrainTask") not in channel.sent and ("a", "TrainTask") in channel.sent


def test_without_molecules_there_is_nothing_to_compare_and_every_site_is_listed():
    channel = Scripted({"a": None, "b": None})
    gate = JoinGate(channel, "r", None)
    assert gate.available_sites() == ("a", "b")
    assert channel.sent == []


# ----- the partners' secret fingerprint permutation ------------------------------------------


def test_a_shared_key_permutes_every_sites_features_alike_and_the_coordinator_knows_its_id_only(
    molecules_csv, tmp_path
):
    key_file = tmp_path / "consortium.key"
    key_id = write_permutation_key(key_file)
    run = recipe_for(molecules_csv, permutation_key_id=key_id)
    plain = recipe_for(molecules_csv)
    permutation = FingerprintPermutation.from_key_file(key_file, run.features.n_bits)
    sites = {}
    for index, name in enumerate(SITES[:2], start=1):
        config = dataclasses.replace(
            site_config(molecules_csv, index, tmp_path), permutation_key=str(key_file)
        )
        sites[name] = build_site(name, config, run)
        unpermuted = load_site_data(config.data, plain)
        for got, want in (
            (sites[name].data.train, unpermuted.train),
            (sites[name].data.test, unpermuted.test),
        ):
            got_features, want_features = dense(got.features), dense(want.features)
            np.testing.assert_array_equal(got_features, permutation.apply(want_features))
            assert not np.array_equal(got_features, want_features)

    check = expected_preprocessing(run)
    assert check is not None
    coordinator_side = check.expected.to_json()
    assert check.expected.recipe["permutation_key_id"] == key_id
    assert check.expected.permuted_reference_digest is None  # it cannot compute it
    assert load_permutation_key(key_file).hex() not in coordinator_side

    # A partner holding another key (its copy of the recipe names that key) is refused.
    other_key = tmp_path / "other.key"
    other_id = write_permutation_key(other_key)
    other = build_site(
        "site-3",
        dataclasses.replace(
            site_config(molecules_csv, 3, tmp_path), permutation_key=str(other_key)
        ),
        recipe_for(molecules_csv, permutation_key_id=other_id),
    )
    outcomes: list[JoinOutcome] = []
    gate = JoinGate(
        InProcessChannel({**sites, "site-3": other}), "r", check, on_outcome=outcomes.extend
    )
    assert gate.available_sites() == ("site-1", "site-2")
    (refused,) = [o for o in outcomes if not o.admitted]
    assert refused.site == "site-3" and "permutation key id (permutation_key_id)" in refused.reason
    assert f'load the consortium\'s permutation key (key id "{key_id}")' in refused.reason
    # Both partners' permuted reference features agree; the first pinned them (trust on first use).
    pinned = check.expected.permuted_reference_digest
    described = [runtime.preprocessing for runtime in sites.values()]
    assert pinned is not None
    assert [d.permuted_reference_digest if d else None for d in described] == [pinned, pinned]
