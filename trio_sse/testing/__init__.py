"""Drive ASGI applications in memory, for tests.

:func:`open_stream` opens an event stream against an ASGI app without
sockets and reads it incrementally, so an endless stream never hangs a
test; :func:`request` runs a short request to completion. Both run the app
in a nursery they own and are fully deterministic under
``trio.testing.MockClock``.
"""

from ._client import EventStream as EventStream
from ._client import Response as Response
from ._client import open_stream as open_stream
from ._client import request as request

__all__ = ["EventStream", "Response", "open_stream", "request"]
