"""Admission control on its own, with a fake clock: the token bucket, calls in flight, one
waiting pull, summarised audit and quarantine."""

import pytest

from fedpharma.core.errors import ConfigError
from fedpharma.transport.grpc.admission import (
    QUARANTINED,
    THROTTLED,
    Admission,
    AdmissionSettings,
    Refused,
)


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def gate(**settings):
    clock, notes, shut = Clock(), [], []
    admission = Admission(
        AdmissionSettings(**settings),
        lambda kind, site, rnd, reason: notes.append((kind, site, reason)),
        lambda site, reason: shut.append(site),
        clock,
    )
    return admission, clock, notes, shut


def admitted(admission, site="s", pull=False):
    try:
        with admission.call(site, pull=pull):
            return True
    except Refused:
        return False


def test_the_rate_is_a_token_bucket_that_refills():
    admission, clock, _, _ = gate(rate_per_site=2.0, burst_per_site=3)
    assert [admitted(admission) for _ in range(4)] == [True, True, True, False]
    clock.now += 0.5  # one token back
    assert [admitted(admission) for _ in range(2)] == [True, False]
    clock.now += 100  # refills to the burst, not beyond
    assert sum(admitted(admission) for _ in range(10)) == 3
    assert admitted(admission, site="other")  # each identity has its own bucket


def test_calls_in_flight_and_waiting_pulls_are_capped_per_site():
    admission, _, _, _ = gate(max_calls_per_site=3)
    with admission.call("s", pull=True) as ticket:
        with pytest.raises(Refused, match="already waiting"), admission.call("s", pull=True):
            pass
        ticket.end_pull()  # it streams its task now: another pull may wait
        with admission.call("s", pull=True), admission.call("s"):
            with pytest.raises(Refused, match="3 calls of this site"), admission.call("s"):
                pass
            assert admitted(admission, site="other")
    assert admitted(admission, pull=True)


def test_refusals_are_audited_a_few_times_then_summarised():
    admission, clock, notes, _ = gate(rate_per_site=1.0, burst_per_site=1, audit_burst=2)
    results = [admitted(admission) for _ in range(10)]
    assert results.count(False) == 9
    assert [kind for kind, _, _ in notes] == ["refused", "refused"]
    clock.now += 30  # the window passed: the next refusal first writes the summary
    admission.offence("s", "result_rejected", "malformed")
    assert notes[2][0] == "refused" and "refused 7" in notes[2][2]
    assert notes[3] == ("result_rejected", "s", "malformed")
    admission.flush()
    assert len(notes) == 4  # nothing pending


def test_an_offender_is_quarantined_once_and_then_refused_everything():
    admission, _, notes, shut = gate(quarantine_after=3)
    for _ in range(5):
        admission.offence("s", "denied", "impersonation")
    assert shut == ["s"] and admission.quarantined().keys() == {"s"}
    assert [kind for kind, _, _ in notes].count("quarantined") == 1
    with pytest.raises(Refused) as caught, admission.call("s"):
        pass
    assert caught.value.quarantined and str(caught.value).startswith(QUARANTINED)
    assert admission.offences("s") == 5 and admitted(admission, site="other")


def test_a_refusal_says_it_is_throttling():
    admission, _, _, _ = gate(rate_per_site=1.0, burst_per_site=1)
    admitted(admission)
    with pytest.raises(Refused) as caught, admission.call("s"):
        pass
    assert str(caught.value).startswith(THROTTLED) and not caught.value.quarantined


@pytest.mark.parametrize(
    "bad",
    [
        {"max_calls_per_site": 1},
        {"max_pulls_per_site": 4},
        {"rate_per_site": 0},
        {"quarantine_after": 0},
        {"audit_window": 0},
    ],
)
def test_settings_that_would_lock_out_honest_sites_are_refused(bad):
    with pytest.raises(ConfigError):
        AdmissionSettings(**bad)


def test_the_server_config_sets_the_per_site_limits_within_bounds(tmp_path):
    from fedpharma.core.config import load_server_config

    path = tmp_path / "server.toml"
    path.write_text(
        "[server]\ninsecure = true\nmax_calls_per_site = 6\nmax_calls_per_second = 5.0\n"
        "quarantine_after = 30\n"
    )
    section = load_server_config(path).server
    assert (section.max_calls_per_site, section.max_calls_per_second) == (6, 5.0)
    assert section.quarantine_after == 30
    path.write_text("[server]\ninsecure = true\nmax_calls_per_site = 1\nquarantine_after = 0\n")
    with pytest.raises(ConfigError, match="2 problem"):
        load_server_config(path)
