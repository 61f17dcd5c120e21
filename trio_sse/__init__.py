"""Server-Sent Events for trio.

Events are built and validated once and encoded once (sans-IO); a keyed
:class:`Broadcaster` fans them out to subscribers that each own a bounded trio
memory channel; :class:`SseResponse` (and :class:`WebSocketResponse`)
streams them over ASGI with a nursery that owns the stream's lifetime;
:func:`serve` runs Hypercorn's trio worker inside your own nursery.

Edges live in their own modules: :mod:`trio_sse.testing`,
:mod:`trio_sse.client`, :mod:`trio_sse.websocket` and :mod:`trio_sse.redis`.
"""

from ._asgi import last_event_id as last_event_id
from ._backend import Backend as Backend
from ._backend import LocalDelivery as LocalDelivery
from ._backend import MemoryBackend as MemoryBackend
from ._backend import Replay as Replay
from ._backend import parse_event_id as parse_event_id
from ._backend import stamp as stamp
from ._broadcast import Broadcaster as Broadcaster
from ._broadcast import BroadcastStatistics as BroadcastStatistics
from ._broadcast import BroadcastStream as BroadcastStream
from ._broadcast import BroadcastStreamStatistics as BroadcastStreamStatistics
from ._broadcast import KeyStatistics as KeyStatistics
from ._broadcast import LagPolicy as LagPolicy
from ._broadcast import cast_events as cast_events
from ._config import SseConfig as SseConfig
from ._counters import StreamCounters as StreamCounters
from ._driver import End as End
from ._driver import Sender as Sender
from ._driver import TransportCounters as TransportCounters
from ._errors import ConfigError as ConfigError
from ._errors import InvalidEvent as InvalidEvent
from ._errors import Lagged as Lagged
from ._errors import SseError as SseError
from ._errors import UnwritableItem as UnwritableItem
from ._event import Event as Event
from ._event import comment as comment
from ._parser import EventParser as EventParser
from ._parser import MessageEvent as MessageEvent
from ._parser import ParseError as ParseError
from ._response import SseResponse as SseResponse
from ._response import sse_channel as sse_channel
from ._serve import run as run
from ._serve import serve as serve
from ._shutdown import ShutdownSignal as ShutdownSignal
from ._streams import chain as chain
from ._streams import replay as replay
from ._websocket import WebSocketResponse as WebSocketResponse

__version__ = "0.1.0"
