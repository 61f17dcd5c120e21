"""Placeholder: replaced by the real module."""
Backend: object = None
MemoryBackend: object = None
