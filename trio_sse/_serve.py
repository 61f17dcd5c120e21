"""Placeholder: replaced by the real module."""
serve: object = None
