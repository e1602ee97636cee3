"""Transports implementing :class:`fedpharma.protocol.Channel`: in-process (simulation) and gRPC."""
