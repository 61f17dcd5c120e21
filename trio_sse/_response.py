"""Placeholder: replaced by the real module."""
Sender: object = None
SseResponse: object = None
last_event_id: object = None
sse_channel: object = None
