# ruff: noqa
# mypy: ignore-errors
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class JoinRequest(_message.Message):
    __slots__ = ("protocol_version", "site")
    PROTOCOL_VERSION_FIELD_NUMBER: _ClassVar[int]
    SITE_FIELD_NUMBER: _ClassVar[int]
    protocol_version: int
    site: str
    def __init__(
        self, protocol_version: _Optional[int] = ..., site: _Optional[str] = ...
    ) -> None: ...

class JoinReply(_message.Message):
    __slots__ = (
        "protocol_version",
        "run_id",
        "heartbeat_seconds",
        "max_payload_bytes",
        "chunk_bytes",
    )
    PROTOCOL_VERSION_FIELD_NUMBER: _ClassVar[int]
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    HEARTBEAT_SECONDS_FIELD_NUMBER: _ClassVar[int]
    MAX_PAYLOAD_BYTES_FIELD_NUMBER: _ClassVar[int]
    CHUNK_BYTES_FIELD_NUMBER: _ClassVar[int]
    protocol_version: int
    run_id: str
    heartbeat_seconds: float
    max_payload_bytes: int
    chunk_bytes: int
    def __init__(
        self,
        protocol_version: _Optional[int] = ...,
        run_id: _Optional[str] = ...,
        heartbeat_seconds: _Optional[float] = ...,
        max_payload_bytes: _Optional[int] = ...,
        chunk_bytes: _Optional[int] = ...,
    ) -> None: ...

class PullRequest(_message.Message):
    __slots__ = ("site", "wait_seconds")
    SITE_FIELD_NUMBER: _ClassVar[int]
    WAIT_SECONDS_FIELD_NUMBER: _ClassVar[int]
    site: str
    wait_seconds: float
    def __init__(
        self, site: _Optional[str] = ..., wait_seconds: _Optional[float] = ...
    ) -> None: ...

class PayloadHeader(_message.Message):
    __slots__ = (
        "protocol_version",
        "run_id",
        "round",
        "task_id",
        "total_bytes",
        "sha256",
        "site",
        "audit_seq",
        "audit_hash",
    )
    PROTOCOL_VERSION_FIELD_NUMBER: _ClassVar[int]
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    ROUND_FIELD_NUMBER: _ClassVar[int]
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    TOTAL_BYTES_FIELD_NUMBER: _ClassVar[int]
    SHA256_FIELD_NUMBER: _ClassVar[int]
    SITE_FIELD_NUMBER: _ClassVar[int]
    AUDIT_SEQ_FIELD_NUMBER: _ClassVar[int]
    AUDIT_HASH_FIELD_NUMBER: _ClassVar[int]
    protocol_version: int
    run_id: str
    round: int
    task_id: str
    total_bytes: int
    sha256: bytes
    site: str
    audit_seq: int
    audit_hash: str
    def __init__(
        self,
        protocol_version: _Optional[int] = ...,
        run_id: _Optional[str] = ...,
        round: _Optional[int] = ...,
        task_id: _Optional[str] = ...,
        total_bytes: _Optional[int] = ...,
        sha256: _Optional[bytes] = ...,
        site: _Optional[str] = ...,
        audit_seq: _Optional[int] = ...,
        audit_hash: _Optional[str] = ...,
    ) -> None: ...

class NoTask(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class Finished(_message.Message):
    __slots__ = ("reason",)
    REASON_FIELD_NUMBER: _ClassVar[int]
    reason: str
    def __init__(self, reason: _Optional[str] = ...) -> None: ...

class TaskChunk(_message.Message):
    __slots__ = ("header", "data", "no_task", "finished")
    HEADER_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    NO_TASK_FIELD_NUMBER: _ClassVar[int]
    FINISHED_FIELD_NUMBER: _ClassVar[int]
    header: PayloadHeader
    data: bytes
    no_task: NoTask
    finished: Finished
    def __init__(
        self,
        header: _Optional[_Union[PayloadHeader, _Mapping]] = ...,
        data: _Optional[bytes] = ...,
        no_task: _Optional[_Union[NoTask, _Mapping]] = ...,
        finished: _Optional[_Union[Finished, _Mapping]] = ...,
    ) -> None: ...

class ResultChunk(_message.Message):
    __slots__ = ("header", "data")
    HEADER_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    header: PayloadHeader
    data: bytes
    def __init__(
        self, header: _Optional[_Union[PayloadHeader, _Mapping]] = ..., data: _Optional[bytes] = ...
    ) -> None: ...

class PushReply(_message.Message):
    __slots__ = ("accepted",)
    ACCEPTED_FIELD_NUMBER: _ClassVar[int]
    accepted: bool
    def __init__(self, accepted: _Optional[bool] = ...) -> None: ...

class HeartbeatRequest(_message.Message):
    __slots__ = ("site",)
    SITE_FIELD_NUMBER: _ClassVar[int]
    site: str
    def __init__(self, site: _Optional[str] = ...) -> None: ...

class HeartbeatReply(_message.Message):
    __slots__ = ("finished",)
    FINISHED_FIELD_NUMBER: _ClassVar[int]
    finished: bool
    def __init__(self, finished: _Optional[bool] = ...) -> None: ...

class LeaveRequest(_message.Message):
    __slots__ = ("site", "reason")
    SITE_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    site: str
    reason: str
    def __init__(self, site: _Optional[str] = ..., reason: _Optional[str] = ...) -> None: ...

class LeaveReply(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...
