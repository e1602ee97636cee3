"""The core every layer builds on: errors, configuration, the (de)serialization engine,
parameters, the dataset type and the protocol (messages, settings, codec, channel)."""
