"""Placeholder: replaced by the real module."""
Event: object = None
comment: object = None
