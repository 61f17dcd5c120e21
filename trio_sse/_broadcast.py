"""Placeholder: replaced by the real module."""
Broadcaster: object = None
BroadcastStream: object = None
LagPolicy: object = None
cast_events: object = None
chain: object = None
replay: object = None
