"""Transports implementing :class:`fedpharma.core.protocol.Channel`: in-process (simulation) and
gRPC."""
