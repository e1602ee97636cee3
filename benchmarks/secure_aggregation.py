"""What does secure aggregation cost per round, against plaintext FedAvg?

One round of FedAvg aggregation of a ``--params``-parameter float32 model (default 1,000,000, in
four arrays like a small MLP) over ``--sites`` sites (default 10), three ways, each on its real
wire path (every message is serialized by its sender and parsed by its receiver, and wrapped in
the protocol envelope ``fedpharma.core.protocol.codec.encode_message`` as over gRPC):

- **plaintext**: a site sends its update in a ``TrainResult``; the coordinator decodes the n
  messages and takes the sample-weighted mean (``SampleWeightedMean``, McMahan et al. 2017).
- **SecAgg** (Bonawitz et al. 2017): a site quantizes its update into the 32-bit ring
  (``FixedPoint(bits=32)``) and runs all five phases of ``SecAggSite`` (advertise endorsed keys,
  share keys after checking every endorsement, masked input, sign the survivor list, unmask after
  checking t signatures); the coordinator runs ``SecAggServer`` (roster, route shares, collect
  masked inputs, collect signatures, unmask) and decodes the mean. Threshold t = ⌊2n/3⌋ + 1.
  The active-coordinator additions (issue 12) are timed as steps of their own: *endorse* (the
  site's ECDSA endorsement of its round keys), *check endorsements* (n certificate and signature
  checks), *consistency* (the whole consistency-check phase, both sides) and *check
  consistency* (t Ed25519 verifications before unmasking); "without the additions" subtracts
  them, the round as it was before. Three variants:
  no dropout; ``--dropouts`` sites drop after sharing keys (the coordinator must rebuild their
  mask keys and strip their pairwise masks); ``--dropouts`` sites drop after sending their masked
  input (they stay in the sum; t others answer the unmasking).
- **CKKS** (Cheon et al. 2017, TenSEAL): a site encrypts n_k·Δ_k (``SecretContext.encrypt_update``)
  and uploads it endorsed (``SignedContribution``); the coordinator parses the n uploads and
  sends every contributor the contributor set, which each checks and endorses; one contributing
  site receives the set, the signatures and all n ciphertexts (``DecryptRequest``), checks them,
  adds the ciphertexts itself (``SecretContext.aggregate``), decrypts the mean
  (``SecretContext.decrypt_weighted_mean``) and returns a ``DecryptedMean`` (``docs/ckks.md``).

Definitions (the same for all three; times are CPU seconds of this process by default, see
``--clock``):

- *site s*: the time one site spends on aggregation in a round, from holding its update Δ_k (as
  ``Parameters``) to having sent its last message, including parsing what it receives; the mean
  over the sites that took part in every phase.
- *coord s*: the coordinator's time from the sites' message bytes to the mean update as
  ``Parameters``, including serializing what it sends.
- *decrypt s* (CKKS only): the decrypting site's extra work (parse the request, check it, add
  the ciphertexts, decrypt, serialize).
- *cost/site*: site s + (coord s + decrypt s) / n — the round's aggregation work shared out per
  site. *×plain* is its ratio to plaintext's cost/site.
- *round s*: site s + coord s + decrypt s, the round's critical path when the sites work in
  parallel (network time excluded).
- *upload*: bytes one site sends in the round, all phases and envelopes (the CKKS decryptor's
  extra ``DecryptedMean`` upload is listed separately); *×plain* is its ratio to plaintext's.

Targets (from the issue): SecAgg cost/site ≤ 3× plaintext (checked for every variant) and upload
≤ 1.1× at 32 bits; CKKS encrypt + aggregate + decrypt ≤ 2 s per 1M parameters, checked twice:
for the whole round s (with every serialization, envelope and frame digest) and for the three
calls ``encrypt_update`` (one site) + ``aggregate`` + ``decrypt_weighted_mean`` alone; CKKS
upload ≤ 20× plaintext; SecAgg cost/site with the active-coordinator additions ≤ 1.2× without
them (issue 12). A second table splits each secure round into those calls and the rest.

The rows run interleaved, round after round, and every number is the median over ``--repeats``
rounds (fresh keys and messages each round; CKKS key generation is done once and reported
apart). ``--clock cpu`` (default) times this process's CPU (``time.process_time``): on a shared
machine, elapsed time mostly measures the other processes, while CPU time is what the work
costs (it still suffers from their use of caches and memory bandwidth). The load average and the
share of a CPU the process got are printed and recorded; ``--clock wall`` times elapsed seconds.

    .venv/bin/python benchmarks/secure_aggregation.py [--params 1000000] [--sites 10]
        [--repeats 5] [--dropouts 2] [--threads N] [--clock cpu|wall]

``--threads N`` pins the process to N CPUs and caps native thread pools at N. Every path timed
here runs on one thread (TenSEAL's CKKSVector calls hold the GIL and do not use its thread pool;
OpenSSL and numpy work on the calling thread), so CPU time and idle-machine wall time agree.
Writes ``benchmarks/results/secure_aggregation.json`` (``--out``).
"""

from __future__ import annotations

import argparse
import gc
import os
import statistics
import sys
import time
from collections import defaultdict
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np
from _common import RESULTS_DIR, machine_info, print_table, write_json

from fedpharma.core.params import Parameters
from fedpharma.core.protocol import SecureReply, SecureTask, TrainResult
from fedpharma.core.protocol.codec import decode_message, encode_message
from fedpharma.secure import (
    DecryptedMean,
    FixedPoint,
    KeyAdvertisement,
    KeyRoster,
    MaskedInput,
    PublicContext,
    RoundSetup,
    SecAggServer,
    SecAggSite,
    SecretContext,
    ShareBundle,
    ShareDelivery,
    SurvivorList,
    UnmaskingShares,
    create_secret_context,
    minimum_threshold,
)
from fedpharma.secure.contributors import (
    ContributorSet,
    DecryptRequest,
    Member,
    SetSignature,
    SignedContribution,
    check_contributor_set,
    check_decrypt_request,
    contribution_statement,
    update_digest,
)
from fedpharma.secure.identity import Consortium, SiteIdentity, ephemeral_consortium
from fedpharma.secure.secagg import ConsistencyProof, ConsistencySignature
from fedpharma.secure.secagg import site as secagg_site
from fedpharma.strategy import SampleWeightedMean, SiteUpdate

RUN = "bench"
RING_BITS = 32
CLIP = 1.0
MAX_EXAMPLES = 100_000
SECAGG_COST_TARGET = 3.0
SECAGG_UPLOAD_TARGET = 1.1
ACTIVE_OVERHEAD_TARGET = 1.2  # issue 12: cost/site with the additions, over without them
ADDED_STEPS = ("endorse", "check endorsements", "consistency", "check consistency")
CKKS_SECONDS_TARGET = 2.0  # per 1M parameters
CKKS_UPLOAD_TARGET = 20.0


CLOCKS: dict[str, Callable[[], float]] = {"cpu": time.process_time, "wall": time.perf_counter}


@dataclass
class Round:
    """What one round cost: seconds per party (and per named step inside a party's time) on
    ``clock``, bytes each site sent, and the mean it produced."""

    clock: Callable[[], float]
    seconds: dict[str, float] = field(default_factory=lambda: defaultdict(float))
    steps: dict[tuple[str, str], float] = field(default_factory=lambda: defaultdict(float))
    sent: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    mean: Parameters | None = None

    party_name: str = ""

    @contextmanager
    def party(self, name: str) -> Iterator[None]:
        started = self.clock()
        self.party_name = name
        try:
            yield
        finally:
            self.seconds[name] += self.clock() - started

    @contextmanager
    def step(self, party: str, name: str) -> Iterator[None]:
        """Time ``name``, a part of ``party``'s work (call inside its :meth:`party` block)."""
        started = self.clock()
        try:
            yield
        finally:
            self.steps[party, name] += self.clock() - started

    def send(self, site: str, message: SecureReply | TrainResult) -> bytes:
        """The envelope bytes of ``message``, counted as ``site``'s upload."""
        data = encode_message(message)
        self.sent[site] += len(data)
        return data


class TimedIdentity:
    """A site identity whose endorsements are timed as the party's step ``endorse``."""

    def __init__(self, identity: SiteIdentity, rnd: Round) -> None:
        self.name, self._identity, self._rnd = identity.name, identity, rnd

    def endorse(self, statement: bytes) -> Any:
        with self._rnd.step(self._rnd.party_name, "endorse"):
            return self._identity.endorse(statement)


class TimedConsortium:
    """A consortium whose checks are timed as the party's step ``check endorsements``."""

    def __init__(self, consortium: Consortium, rnd: Round) -> None:
        self._consortium, self._rnd = consortium, rnd

    def check(self, site: str, statement: bytes, endorsement: Any) -> None:
        with self._rnd.step(self._rnd.party_name, "check endorsements"):
            self._consortium.check(site, statement, endorsement)


@contextmanager
def timed_consistency_checks(rnd: Round) -> Iterator[None]:
    """Time ``check_consistency`` (inside ``SecAggSite.unmask``) as ``check consistency``."""
    check = secagg_site.check_consistency

    def timed(*args: Any) -> None:
        with rnd.step(rnd.party_name, "check consistency"):
            check(*args)

    secagg_site.check_consistency = timed
    try:
        yield
    finally:
        secagg_site.check_consistency = check


def reply(site: str, phase: str, payload: bytes) -> SecureReply:
    return SecureReply(RUN, 1, site, phase, payload)


def received(data: bytes) -> bytes:
    """The payload of a secure message envelope, as the receiver parses it."""
    message = decode_message(data)
    assert isinstance(message, SecureReply | SecureTask)
    return message.payload


def task(phase: str, payload: bytes) -> bytes:
    return encode_message(SecureTask(RUN, 1, phase, payload))


# ----- the three rounds ---------------------------------------------------------------------


def plaintext_round(
    updates: dict[str, Parameters], counts: dict[str, int], clock: Callable[[], float]
) -> Round:
    rnd = Round(clock)
    wires = {}
    for site, update in updates.items():
        with rnd.party(site):
            fresh = Parameters(update.names, update.arrays)  # no cached encoding from last round
            wires[site] = rnd.send(site, TrainResult(RUN, 1, site, fresh, counts[site]))
    with rnd.party("coordinator"):
        results = [decode_message(wires[site]) for site in sorted(wires)]
        assert all(isinstance(r, TrainResult) for r in results)
        rnd.mean = SampleWeightedMean().mean_update(
            1,
            [SiteUpdate(r.site, r.update, r.n_examples) for r in results],  # type: ignore[union-attr]
        )
    return rnd


def secagg_round(
    updates: dict[str, Parameters],
    counts: dict[str, int],
    clock: Callable[[], float],
    pki: tuple[Consortium, dict[str, SiteIdentity]],
    *,
    drop_before_masking: Sequence[str] = (),
    drop_before_unmasking: Sequence[str] = (),
) -> Round:
    names = sorted(updates)
    template = updates[names[0]]
    codec = FixedPoint(RING_BITS, CLIP, max_sites=len(names), max_examples=MAX_EXAMPLES)
    setup = RoundSetup(RUN, 1, minimum_threshold(len(names)), template.size + 1, RING_BITS)
    rnd = Round(clock)
    consortium = TimedConsortium(pki[0], rnd)
    server = SecAggServer(setup)
    sites: dict[str, SecAggSite] = {}
    contributions: dict[str, Any] = {}
    wires: dict[str, bytes] = {}
    for site in names:  # phase 0: quantize, advertise keys
        with rnd.party(site):
            flat = updates[site].flatten()
            with rnd.step(site, "encode_weighted"):
                contributions[site] = codec.encode_weighted(flat, counts[site])
            identity = TimedIdentity(pki[1][site], rnd)
            sites[site] = SecAggSite(setup, identity, consortium)  # type: ignore[arg-type]
            payload = sites[site].advertise_keys().to_bytes()
            wires[site] = rnd.send(site, reply(site, "advertise", payload))
    with rnd.party("coordinator"):
        ads = [KeyAdvertisement.from_bytes(received(wires[s])) for s in names]
        roster = task("share_keys", server.roster(ads).to_bytes())
    wires = {}
    for site in names:  # phase 1: share keys
        with rnd.party(site):
            bundle = sites[site].share_keys(KeyRoster.from_bytes(received(roster)))
            wires[site] = rnd.send(site, reply(site, "share_keys", bundle.to_bytes()))
    with rnd.party("coordinator"):
        bundles = [ShareBundle.from_bytes(received(wires[s])) for s in names]
        deliveries = {
            s: task("masked_input", d.to_bytes()) for s, d in server.route_shares(bundles).items()
        }
    wires = {}
    maskers = [s for s in names if s not in drop_before_masking]
    for site in maskers:  # phase 2: masked input
        with rnd.party(site):
            delivery = ShareDelivery.from_bytes(received(deliveries[site]))
            with rnd.step(site, "masked_input"):
                masked = sites[site].masked_input(delivery, contributions[site])
            wires[site] = rnd.send(site, reply(site, "masked_input", masked.to_bytes()))
    with rnd.party("coordinator"):
        inputs = [MaskedInput.from_bytes(received(wires[s])) for s in maskers]
        survivors = task("consistency", server.collect_masked_inputs(inputs).to_bytes())
    wires = {}
    unmaskers = [s for s in maskers if s not in drop_before_unmasking]
    for site in unmaskers:  # consistency check: sign the survivor list
        with rnd.party(site), rnd.step(site, "consistency"):
            signed = sites[site].consistency(SurvivorList.from_bytes(received(survivors)))
            wires[site] = rnd.send(site, reply(site, "consistency", signed.to_bytes()))
    with rnd.party("coordinator"), rnd.step("coordinator", "consistency"):
        signatures = [ConsistencySignature.from_bytes(received(wires[s])) for s in unmaskers]
        proof = task("unmask", server.collect_signatures(signatures).to_bytes())
    wires = {}
    for site in unmaskers:  # phase 3: unmask
        with rnd.party(site), timed_consistency_checks(rnd):
            shares = sites[site].unmask(ConsistencyProof.from_bytes(received(proof)))
            wires[site] = rnd.send(site, reply(site, "unmask", shares.to_bytes()))
    with rnd.party("coordinator"):
        responses = [UnmaskingShares.from_bytes(received(wires[s])) for s in unmaskers]
        with rnd.step("coordinator", "unmask"):
            secure_sum = server.unmask(responses)
        mean, _ = codec.decode_weighted_mean(secure_sum.total)
        rnd.mean = template.unflatten(mean)
    for site in names:
        if site not in unmaskers:  # a dropped site's partial work is not a full site's cost
            rnd.seconds.pop(site)
            rnd.sent.pop(site)
            for key in [k for k in rnd.steps if k[0] == site]:
                rnd.steps.pop(key)
    return rnd


def ckks_round(
    updates: dict[str, Parameters],
    counts: dict[str, int],
    secret: SecretContext,
    public: PublicContext,
    clock: Callable[[], float],
    pki: tuple[Consortium, dict[str, SiteIdentity]],
) -> Round:
    names = sorted(updates)
    template = updates[names[0]]
    rnd = Round(clock)
    consortium, identities = pki
    wires = {}
    digests = {}
    for site in names:
        with rnd.party(site):
            flat = updates[site].flatten()
            with rnd.step(site, "encrypt_update"):
                encrypted = secret.encrypt_update(flat, counts[site]).to_bytes()
            with rnd.step(site, "endorse"):
                digests[site] = update_digest(encrypted)
                statement = contribution_statement(RUN, 1, site, digests[site])
                endorsement = identities[site].endorse(statement)
            signed = SignedContribution(RUN, 1, site, encrypted, endorsement)
            wires[site] = rnd.send(site, reply(site, "encrypted_update", signed.to_bytes()))
    with rnd.party("coordinator"):
        uploads = [SignedContribution.from_bytes(received(wires[s])) for s in names]
        assert all(public.key_id == u.encrypted().key_id for u in uploads)
        members = tuple(Member(u.site, u.digest, u.endorsement) for u in uploads)
        contributors = ContributorSet(RUN, 1, members)
        sign_task = task("sign_contributors", contributors.to_bytes())
    wires = {}
    for site in names:
        with rnd.party(site):
            shown = ContributorSet.from_bytes(received(sign_task))
            with rnd.step(site, "check endorsements"):
                check_contributor_set(consortium, shown, RUN, 1, (site, digests[site]), 3)
            with rnd.step(site, "endorse"):
                endorsement = identities[site].endorse(shown.statement())
            answer = SetSignature(site, endorsement).to_bytes()
            wires[site] = rnd.send(site, reply(site, "sign_contributors", answer))
    with rnd.party("coordinator"):
        signatures = tuple(SetSignature.from_bytes(received(wires[s])) for s in names)
        request = DecryptRequest(contributors, signatures, tuple(u.update for u in uploads))
        decrypt_task = task("decrypt", request.to_bytes())
    decryptor = names[0]
    with rnd.party("decryptor"):
        parsed = DecryptRequest.from_bytes(received(decrypt_task))
        with rnd.step("decryptor", "check endorsements"):
            ciphertexts = check_decrypt_request(consortium, parsed, contributors)
        with rnd.step("decryptor", "aggregate"):
            encrypted_sum = secret.aggregate(ciphertexts)
        with rnd.step("decryptor", "decrypt_weighted_mean"):
            decrypted = secret.decrypt_weighted_mean(encrypted_sum, min_contributors=len(names))
        answer = encode_message(reply(decryptor, "decrypt", decrypted.to_bytes()))
    rnd.sent["decryptor"] = len(answer)
    with rnd.party("coordinator"):
        mean = DecryptedMean.from_bytes(received(answer)).mean
        rnd.mean = template.unflatten(mean.astype(np.float64))
    return rnd


# ----- measurement and report ---------------------------------------------------------------


def model(n_params: int) -> dict[str, tuple[int, ...]]:
    """Names and shapes of an MLP-like model of exactly ``n_params`` parameters."""
    head_in, head_out = 256, 16
    head = head_in * head_out + head_out
    trunk_bias = head_in
    trunk = n_params - head - trunk_bias
    if trunk < head_in:
        raise SystemExit(f"--params must be at least {head + trunk_bias + head_in}")
    return {
        "trunk.weight": (trunk // head_in, head_in) if trunk % head_in == 0 else (trunk,),
        "trunk.bias": (trunk_bias,),
        "head.weight": (head_out, head_in),
        "head.bias": (head_out,),
    }


def make_updates(
    n_params: int, n_sites: int, seed: int
) -> tuple[dict[str, Parameters], dict[str, int]]:
    rng = np.random.default_rng(seed)
    shapes = model(n_params)
    updates = {
        f"site-{i:02d}": Parameters.from_dict(
            {
                name: rng.normal(0.0, 0.01, shape).astype(np.float32)
                for name, shape in shapes.items()
            }
        )
        for i in range(n_sites)
    }
    counts = {site: int(rng.integers(100, 5_000)) for site in updates}
    return updates, counts


@dataclass
class Summary:
    label: str
    site: float
    coordinator: float
    decryptor: float
    upload: float
    decryptor_upload: float
    max_error: float
    n_sites: int
    steps: dict[str, float]  # "site encrypt_update" (per site), "coordinator aggregate", …

    @property
    def cost_per_site(self) -> float:
        return self.site + (self.coordinator + self.decryptor) / self.n_sites

    @property
    def round_seconds(self) -> float:
        return self.site + self.coordinator + self.decryptor

    @property
    def added_per_site(self) -> float:
        """The active-coordinator additions' share of :attr:`cost_per_site`."""
        site = sum(self.steps.get(f"site {name}", 0.0) for name in ADDED_STEPS)
        rest = sum(
            value
            for step, value in self.steps.items()
            if not step.startswith("site ") and step.split(" ", 1)[1] in ADDED_STEPS
        )
        return site + rest / self.n_sites


def measure(run: Callable[[], Round], reference: Parameters | None) -> dict[str, Any]:
    """One round of ``run``: each party's seconds, the sites' mean upload, the error."""
    gc.collect()
    wall, cpu = time.perf_counter(), time.process_time()
    rnd = run()
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    assert rnd.mean is not None
    sites = [s for s in rnd.seconds if s.startswith("site-")]
    error = 0.0
    if reference is not None:
        error = float(np.max(np.abs(rnd.mean.flatten() - reference.flatten())))
    steps: dict[str, float] = defaultdict(float)
    for (party, name), seconds in rnd.steps.items():
        if party.startswith("site-"):
            steps[f"site {name}"] += seconds / len(sites)
        else:
            steps[f"{party} {name}"] += seconds
    return {
        "site_s": statistics.mean(rnd.seconds[s] for s in sites),
        "coordinator_s": rnd.seconds["coordinator"],
        "decryptor_s": rnd.seconds.get("decryptor", 0.0),
        "upload_bytes": statistics.mean(rnd.sent[s] for s in sites),
        "decryptor_upload_bytes": rnd.sent.get("decryptor", 0),
        "max_abs_error_vs_plaintext": error,
        "load_average_1min": os.getloadavg()[0],
        "all_parties_wall_s": wall,
        "all_parties_cpu_s": cpu,
        "steps_s": dict(steps),
    }


def summarize(label: str, rows: list[dict[str, Any]], n_sites: int) -> Summary:
    """Medians over the rounds (the largest error)."""
    median = {key: statistics.median(r[key] for r in rows) for key in rows[0] if key != "steps_s"}
    return Summary(
        label,
        median["site_s"],
        median["coordinator_s"],
        median["decryptor_s"],
        median["upload_bytes"],
        median["decryptor_upload_bytes"],
        max(r["max_abs_error_vs_plaintext"] for r in rows),
        n_sites,
        {name: statistics.median(r["steps_s"][name] for r in rows) for name in rows[0]["steps_s"]},
    )


def party_seconds(summary: Summary, step: str) -> float:
    party = step.split(" ", 1)[0]
    return {"site": summary.site, "coordinator": summary.coordinator}.get(party, summary.decryptor)


def verdict(value: float, limit: float) -> str:
    return "PASS" if value <= limit else "FAIL"


def pin_threads(threads: int) -> None:
    available = sorted(os.sched_getaffinity(0))
    if threads < len(available):
        os.sched_setaffinity(0, available[:threads])
    from threadpoolctl import threadpool_limits

    threadpool_limits(threads)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--params", type=int, default=1_000_000)
    parser.add_argument("--sites", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=5, help="rounds per row; medians reported")
    parser.add_argument("--dropouts", type=int, default=2, help="sites dropping in the variants")
    parser.add_argument("--threads", type=int, default=None, help="pin to N CPUs (default: all)")
    parser.add_argument(
        "--clock",
        choices=sorted(CLOCKS),
        default="cpu",
        help="cpu: this process's CPU time (default; other processes' load does not count); "
        "wall: elapsed time",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=RESULTS_DIR / "secure_aggregation.json")
    args = parser.parse_args()
    if args.sites < 3 or not 0 <= args.dropouts <= args.sites - minimum_threshold(args.sites):
        raise SystemExit("need ≥ 3 sites, and at most n − (⌊2n/3⌋ + 1) dropouts")
    if args.threads is not None:
        pin_threads(args.threads)
    machine = machine_info()
    print(f"machine: {machine}", flush=True)
    updates, counts = make_updates(args.params, args.sites, args.seed)
    names = sorted(updates)
    clock = CLOCKS[args.clock]
    reference = plaintext_round(updates, counts, clock).mean
    assert reference is not None

    started = time.perf_counter()
    secret = create_secret_context()
    public = PublicContext.from_bytes(secret.public_context().to_bytes())
    keygen = time.perf_counter() - started
    pki = ephemeral_consortium(names)

    dropped = names[1 : 1 + args.dropouts]  # not names[0]: keep the first site a full one
    runs: list[tuple[str, Callable[[], Round], Parameters | None]] = [
        ("plaintext", lambda: plaintext_round(updates, counts, clock), None),
        ("SecAgg", lambda: secagg_round(updates, counts, clock, pki), reference),
    ]
    if args.dropouts:
        survivors = {s: u for s, u in updates.items() if s not in dropped}
        runs += [
            (
                f"SecAgg, {args.dropouts} drop before masking",
                lambda: secagg_round(updates, counts, clock, pki, drop_before_masking=dropped),
                plaintext_round(survivors, counts, clock).mean,
            ),
            (
                f"SecAgg, {args.dropouts} drop after masking",
                lambda: secagg_round(updates, counts, clock, pki, drop_before_unmasking=dropped),
                reference,
            ),
        ]
    runs.append(
        ("CKKS", lambda: ckks_round(updates, counts, secret, public, clock, pki), reference)
    )

    raw: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for repeat in range(args.repeats):  # interleaved, so that load changes hit every row alike
        print(f"… round {repeat + 1} of {args.repeats}", flush=True)
        for label, run, ref in runs:
            raw[label].append(measure(run, ref))
    summaries = [summarize(label, raw[label], args.sites) for label, _, _ in runs]
    plain = summaries[0]
    rows = [r for label in raw for r in raw[label]]
    cpu_share = sum(r["all_parties_cpu_s"] for r in rows) / sum(
        r["all_parties_wall_s"] for r in rows
    )

    print(
        f"\n{args.params:,} parameters, {args.sites} sites, median of {args.repeats} rounds, "
        f"{args.clock} seconds; load average before {machine.get('load_average')}, after "
        f"{[round(x, 2) for x in os.getloadavg()]}; this process got {cpu_share:.0%} of a CPU "
        "while measured (CPU time / wall time)"
    )
    print(
        "cost/site = site s + (coord s + decrypt s) / sites; round s = site + coord + decrypt "
        "(sites in parallel); upload = bytes one site sends, all phases"
    )
    print_table(
        [
            "aggregation",
            "site s",
            "coord s",
            "decrypt s",
            "cost/site",
            "×plain",
            "round s",
            "upload MB",
            "×plain",
            "max |err|",
        ],
        [
            (
                s.label,
                s.site,
                s.coordinator,
                s.decryptor if s.label == "CKKS" else None,
                s.cost_per_site,
                s.cost_per_site / plain.cost_per_site,
                s.round_seconds,
                s.upload / 1e6,
                s.upload / plain.upload,
                f"{s.max_error:.1e}" if s is not plain else None,
            )
            for s in summaries
        ],
    )
    ckks = summaries[-1]
    per_million = 1e6 / args.params
    ckks_compute = (
        ckks.steps["site encrypt_update"]
        + ckks.steps["decryptor aggregate"]
        + ckks.steps["decryptor decrypt_weighted_mean"]
    )
    print(
        f"CKKS: key generation {keygen:.2f} s (once per consortium); the decryptor also uploads "
        f"{ckks.decryptor_upload / 1e6:.1f} MB (the float32 mean)"
    )
    print("\nthe active-coordinator additions (issue 12): endorsements, consistency check")
    print_table(
        ["aggregation", "added s/site", "cost/site without", "cost/site with", "with / without"],
        [
            (
                s.label,
                s.added_per_site,
                s.cost_per_site - s.added_per_site,
                s.cost_per_site,
                s.cost_per_site / (s.cost_per_site - s.added_per_site),
            )
            for s in summaries[1:]
        ],
    )
    print("\nwhere the secure rounds' time goes (medians; the rest is wire: serialize + parse)")
    print_table(
        ["aggregation", "step", "seconds", "share of its party"],
        [
            (s.label, name, value, value / party_seconds(s, name))
            for s in summaries[1:]
            for name, value in s.steps.items()
        ],
    )
    targets = []
    for s in summaries[1:-1]:
        ratio = s.cost_per_site / plain.cost_per_site
        targets.append(
            (f"{s.label}: cost/site ≤ {SECAGG_COST_TARGET:g}× plaintext", ratio, SECAGG_COST_TARGET)
        )
    secagg = summaries[1]
    targets += [
        (
            f"{s.label}: cost/site with the active-coordinator additions ≤ "
            f"{ACTIVE_OVERHEAD_TARGET:g}× without",
            s.cost_per_site / (s.cost_per_site - s.added_per_site),
            ACTIVE_OVERHEAD_TARGET,
        )
        for s in summaries[1:-1]
    ]
    targets += [
        (
            f"SecAgg: upload ≤ {SECAGG_UPLOAD_TARGET:g}× plaintext at {RING_BITS} bits",
            secagg.upload / plain.upload,
            SECAGG_UPLOAD_TARGET,
        ),
        (
            f"CKKS: encrypt + aggregate + decrypt, whole round s incl. serialization, "
            f"≤ {CKKS_SECONDS_TARGET:g} s per 1M parameters",
            ckks.round_seconds * per_million,
            CKKS_SECONDS_TARGET,
        ),
        (
            f"CKKS: encrypt_update + aggregate + decrypt_weighted_mean calls alone "
            f"≤ {CKKS_SECONDS_TARGET:g} s per 1M parameters",
            ckks_compute * per_million,
            CKKS_SECONDS_TARGET,
        ),
        (
            f"CKKS: upload ≤ {CKKS_UPLOAD_TARGET:g}× plaintext",
            ckks.upload / plain.upload,
            CKKS_UPLOAD_TARGET,
        ),
    ]
    print()
    for text, value, limit in targets:
        print(f"{verdict(value, limit)}  {text}: {value:.2f}")

    payload = {
        "params": args.params,
        "sites": args.sites,
        "repeats": args.repeats,
        "dropouts": args.dropouts,
        "threads": args.threads,
        "clock": args.clock,
        "cpu_share_while_measured": cpu_share,
        "ring_bits": RING_BITS,
        "ckks_keygen_s": keygen,
        "definitions": {
            "site_s": "one site's time from its update to its last message sent, all phases",
            "coordinator_s": "coordinator's time from the sites' bytes to the mean Parameters",
            "decryptor_s": "CKKS: the decrypting site's extra time",
            "cost_per_site_s": "site_s + (coordinator_s + decryptor_s) / sites",
            "round_s": "site_s + coordinator_s + decryptor_s",
            "upload_bytes": "bytes one site sends in the round, all phases and envelopes",
        },
        "results": [
            {
                "label": s.label,
                "site_s": s.site,
                "coordinator_s": s.coordinator,
                "decryptor_s": s.decryptor,
                "cost_per_site_s": s.cost_per_site,
                "cost_per_site_over_plaintext": s.cost_per_site / plain.cost_per_site,
                "added_per_site_s": s.added_per_site,
                "round_s": s.round_seconds,
                "upload_bytes": s.upload,
                "upload_over_plaintext": s.upload / plain.upload,
                "decryptor_upload_bytes": s.decryptor_upload,
                "max_abs_error_vs_plaintext": s.max_error,
                "steps_s": s.steps,
                "rounds": raw[s.label],
            }
            for s in summaries
        ],
        "targets": [
            {"target": text, "value": value, "limit": limit, "pass": value <= limit}
            for text, value, limit in targets
        ],
        "machine": machine,
        "load_average_after": [round(x, 2) for x in os.getloadavg()],
    }
    print(f"wrote {write_json(args.out, payload)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
