"""How the coordinator serves: bind address, wire limits, liveness, thread pool, admission."""

from __future__ import annotations

from dataclasses import dataclass, field

from fedpharma.core.errors import ConfigError
from fedpharma.transport.grpc.admission import AdmissionSettings
from fedpharma.transport.grpc.wire import WireLimits


@dataclass(frozen=True)
class CoordinatorSettings:
    """How the coordinator serves; every field has a safe default except the run id."""

    run_id: str
    address: str = "127.0.0.1:0"  # host:port to bind; port 0 picks a free port
    limits: WireLimits = field(default_factory=WireLimits)
    liveness_timeout: float = 30.0  # a site silent this long is no longer available
    heartbeat_seconds: float = 5.0  # how often sites are asked to send a heartbeat
    max_pull_wait: float = 5.0  # longest a PullTask long-poll is held open
    # Thread pool size. Each site may hold a long-poll, a heartbeat and a push at once, so allow
    # about 2 per site plus a few; beyond it calls are refused as busy and sites retry.
    max_workers: int = 32
    # What one site may ask: calls in flight, one waiting pull, rate, quarantine of offenders.
    admission: AdmissionSettings = field(default_factory=AdmissionSettings)

    def __post_init__(self) -> None:
        problems = []
        if self.heartbeat_seconds <= 0 or self.liveness_timeout <= self.heartbeat_seconds:
            problems.append("liveness_timeout must exceed heartbeat_seconds, both positive")
        if self.max_pull_wait <= 0:
            problems.append("max_pull_wait must be positive")
        if self.max_workers < 2:
            problems.append("max_workers must be at least 2")
        if problems:
            raise ConfigError(problems, source="coordinator settings")
