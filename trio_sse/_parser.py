"""Placeholder: replaced by the real module."""
EventParser: object = None
MessageEvent: object = None
