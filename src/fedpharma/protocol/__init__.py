"""Versioned messages, their wire codec, and the Channel interface every transport implements."""

from fedpharma.protocol.channel import Channel
from fedpharma.protocol.messages import (
    PROTOCOL_VERSION,
    DescribeTask,
    DescriptionReply,
    EvaluateResult,
    EvaluateTask,
    Failure,
    Refusal,
    Reply,
    SecureReply,
    SecureTask,
    Task,
    TrainResult,
    TrainTask,
)

__all__ = [
    "PROTOCOL_VERSION",
    "Channel",
    "DescribeTask",
    "DescriptionReply",
    "EvaluateResult",
    "EvaluateTask",
    "Failure",
    "Refusal",
    "Reply",
    "SecureReply",
    "SecureTask",
    "Task",
    "TrainResult",
    "TrainTask",
]
