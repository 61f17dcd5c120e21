"""An EventSource client for trio, built on httpx.

:func:`open_event_source` connects to an event stream and yields an
:class:`EventSource`: an async iterator of :class:`~trio_sse.MessageEvent`
that follows the browser's EventSource processing model. It reconnects after
network errors and after the server ends the stream, waits the reconnection
time (the server's ``retry:`` field wins over the client's default), backs
off exponentially with jitter on repeated failures, resends
``Last-Event-ID``, stops quietly on HTTP 204 and raises
:class:`EventSourceError` on any other unusable response.

All the work happens inside ``__anext__``: no background task, so leaving the
``async with`` block leaves nothing running, and cancellation reaches the
read in progress.

Run ``python -m trio_sse.client URL`` to print a stream from the command line.

httpx is an optional dependency: ``pip install trio-sse[client]``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import math
import random
import signal
import sys
from collections.abc import AsyncIterator, Collection, Iterator, Mapping, Sequence

import trio

from ._errors import SseError
from ._parser import MessageEvent, ParseError
from ._reconnect import ReconnectingSource, backoff_delay

try:
    import httpx
except ImportError as _exc:  # pragma: no cover - depends on the environment
    raise ImportError(
        "trio_sse.client needs httpx: pip install trio-sse[client]"
    ) from _exc

__all__ = [
    "ConnectTimeout",
    "EventSource",
    "EventSourceError",
    "NetworkError",
    "ReadTimeout",
    "backoff_delay",
    "main",
    "open_event_source",
]

logger = logging.getLogger("trio_sse.client")

#: The media type an event stream must be served with.
EVENT_STREAM = "text/event-stream"

# Buffered chunks read while unwinding a response on close, at most.
_MAX_UNWIND_CHUNKS = 64


class EventSourceError(SseError):
    """The event stream cannot be used.

    Raised for a response whose status is not 200 (204 ends the stream
    quietly) or whose content type is not ``text/event-stream``, and for a URL
    that cannot be requested at all. Such responses are not retried unless
    their status is in ``retry_statuses``.
    """

    def __init__(
        self,
        message: str,
        *,
        url: str,
        status: int | None = None,
        content_type: str | None = None,
    ) -> None:
        super().__init__(message)
        #: The URL of the event stream.
        self.url = url
        #: The HTTP status of the response, or ``None`` when there was none.
        self.status = status
        #: The response's ``content-type`` header, or ``None``.
        self.content_type = content_type


class NetworkError(EventSourceError):
    """Connecting failed or the connection dropped.

    The client retries these on its own; one is raised only when
    ``max_reconnects`` gives up. The underlying httpx exception is the
    ``__cause__``.
    """


class ConnectTimeout(NetworkError):
    """No response headers arrived within ``timeout`` seconds."""


class ReadTimeout(NetworkError):
    """No bytes, not even a keep-alive comment, arrived for ``timeout`` seconds."""


def _is_event_stream(content_type: str | None) -> bool:
    if content_type is None:
        return False
    media_type = content_type.split(";", 1)[0].strip().lower()
    return media_type == EVENT_STREAM


@contextlib.contextmanager
def _map_exceptions(url: str) -> Iterator[None]:
    """Translate httpx transport errors into this module's errors.

    Only :class:`Exception` subclasses are caught, so ``trio.Cancelled`` and
    ``KeyboardInterrupt`` pass through untouched.
    """
    try:
        yield
    except (
        httpx.InvalidURL,
        httpx.UnsupportedProtocol,
        httpx.LocalProtocolError,
        httpx.TooManyRedirects,
    ) as exc:
        raise EventSourceError(f"cannot request {url}: {exc}", url=url) from exc
    except httpx.TransportError as exc:
        detail = str(exc) or type(exc).__name__
        raise NetworkError(f"connection to {url} failed: {detail}", url=url) from exc


async def _unwind(chunks: AsyncIterator[bytes]) -> None:
    """Finish a response's byte iterator on close.

    httpx reads a body through a chain of async generators. Left suspended
    between chunks, they would be finalized by the garbage collector (and
    trio warns). Resuming the iterator in a cancelled scope makes the first
    socket read raise ``Cancelled``, which unwinds every generator of the
    chain; the connection is closed on the way.
    """
    with trio.CancelScope() as scope:
        scope.cancel()
        for _ in range(_MAX_UNWIND_CHUNKS):
            try:
                await chunks.__anext__()
            except (StopAsyncIteration, httpx.HTTPError):
                return
    aclose = getattr(chunks, "aclose", None)
    if aclose is not None and not scope.cancelled_caught:
        await aclose()


class EventSource(ReconnectingSource[EventSourceError]):
    """An async iterator of the :class:`~trio_sse.MessageEvent` of one stream.

    Get one from :func:`open_event_source`. Iterating connects (and
    reconnects) as needed; iteration ends only when the server answers 204
    or when ``max_reconnects`` gives up on a stream that ended cleanly.
    """

    _logger = logger

    def __init__(
        self,
        client: httpx.AsyncClient,
        url: str,
        *,
        headers: Mapping[str, str] | None,
        last_event_id: str | None,
        retry: float,
        max_retry: float,
        timeout: float | None,
        retry_statuses: Collection[int],
        max_reconnects: int | None,
        max_event_size: int | None,
        rng: random.Random,
    ) -> None:
        super().__init__(
            url,
            last_event_id=last_event_id,
            retry=retry,
            max_retry=max_retry,
            timeout=timeout,
            retry_statuses=retry_statuses,
            max_reconnects=max_reconnects,
            max_event_size=max_event_size,
            rng=rng,
        )
        self._client = client
        self._headers = dict(headers or {})
        self._response: httpx.Response | None = None
        self._chunks: AsyncIterator[bytes] | None = None

    @property
    def connected(self) -> bool:
        """Whether a response is open and being read."""
        return self._chunks is not None

    async def aclose(self) -> None:
        """Close the response being read; iterating afterwards is an error."""
        self._closed = True
        self._pending.clear()
        await self._discard_response()

    # -- internals -------------------------------------------------------

    async def _connect(self) -> None:
        await self._discard_response()
        if not await self._wait_to_reconnect():
            return

        try:
            with _map_exceptions(self.url):
                request = self._build_request()
                with trio.move_on_after(self._timeout) as scope:
                    response = await self._client.send(
                        request, stream=True, follow_redirects=True
                    )
        except NetworkError as exc:
            self._fail(exc)
            return
        except EventSourceError:
            # The URL cannot be requested: retrying would not help.
            self._done = True
            raise
        if scope.cancelled_caught:
            self._fail(
                ConnectTimeout(
                    f"no response from {self.url} within {self._timeout} s",
                    url=self.url,
                )
            )
            return

        self._response = response
        status = response.status_code
        content_type = response.headers.get("content-type")
        if status == 204:
            logger.info("%s answered 204 No Content; not reconnecting", self.url)
            self._done = True
            await self._discard_response()
            return
        if status == 200 and _is_event_stream(content_type):
            self._failures = 0
            # Decoded bytes: a proxy may gzip the stream (httpx decodes it
            # incrementally, so events still arrive as they come).
            self._chunks = response.aiter_bytes()
            return
        await self._discard_response()
        if status != 200:
            message = (
                f"{self.url} answered HTTP {status} "
                f"(content-type {content_type!r}), not an event stream"
            )
        else:
            message = (
                f"{self.url} answered with content-type {content_type!r}, "
                f"expected {EVENT_STREAM!r}"
            )
        error = EventSourceError(
            message, url=self.url, status=status, content_type=content_type
        )
        if status in self._retry_statuses:
            self._fail(error)
            return
        self._done = True
        raise error

    def _build_request(self) -> httpx.Request:
        headers = httpx.Headers(
            {"Accept": EVENT_STREAM, "Cache-Control": "no-cache", **self._headers}
        )
        if self._committed_id:
            # Ids are any string without NUL, CR or LF: send them as UTF-8,
            # as browsers do.
            headers["Last-Event-ID"] = self._committed_id
        timeout = None if math.isinf(self._timeout) else self._timeout
        return self._client.build_request(
            "GET",
            self.url,
            headers=headers,
            # Reads are timed here (a quiet stream is normal up to
            # ``timeout``), so httpx must not time them out on its own.
            timeout=httpx.Timeout(timeout, read=None),
        )

    async def _receive(self) -> None:
        chunks = self._chunks
        if chunks is None:  # pragma: no cover - guarded by __anext__
            return
        try:
            with _map_exceptions(self.url), trio.move_on_after(self._timeout) as scope:
                chunk = await chunks.__anext__()
        except StopAsyncIteration:
            logger.info("%s ended the stream; reconnecting", self.url)
            self._chunks = None
            self._fail(None)
            return
        except NetworkError as exc:
            self._chunks = None
            self._fail(exc)
            return
        except EventSourceError:
            self._chunks = None
            self._done = True
            raise
        except BaseException:
            # Cancelled (or worse) unwound the byte iterator; the response
            # itself is closed by the next connect or by aclose().
            self._chunks = None
            raise
        if scope.cancelled_caught:
            self._chunks = None
            self._fail(
                ReadTimeout(
                    f"no data from {self.url} for {self._timeout} s", url=self.url
                )
            )
            return
        self._delivered_id = self._committed_id
        try:
            events = self._parser.feed(chunk)
        except ParseError:
            self._done = True
            await self._discard_response()
            raise
        self._pending.extend(events)
        self._committed_id = self._parser.last_event_id
        if self._parser.retry is not None:
            self._retry = self._parser.retry / 1000

    async def _discard_response(self) -> None:
        chunks, self._chunks = self._chunks, None
        response, self._response = self._response, None
        if response is None:
            return
        # End of this stream for the parser: an unterminated event is
        # discarded and the next stream may start with a BOM again.
        self._parser.close()
        # Closing only releases local resources; shield it so that a
        # cancelled caller still leaves nothing open.
        with trio.CancelScope(shield=True):
            if chunks is not None:
                await _unwind(chunks)
            with contextlib.suppress(httpx.HTTPError):
                await response.aclose()


@contextlib.asynccontextmanager
async def open_event_source(
    url: str,
    *,
    headers: Mapping[str, str] | None = None,
    last_event_id: str | None = None,
    retry: float = 3.0,
    max_retry: float = 60.0,
    timeout: float | None = 45.0,  # noqa: ASYNC109 (a read timeout, not a deadline)
    client: httpx.AsyncClient | None = None,
    retry_statuses: Collection[int] = (),
    max_reconnects: int | None = None,
    max_event_size: int | None = None,
    rng: random.Random | None = None,
) -> AsyncIterator[EventSource]:
    """Connect to the event stream at ``url``; yield an :class:`EventSource`.

    Nothing connects until the first event is awaited. Leaving the block
    closes the response being read and, unless ``client`` was passed in, the
    connection pool.

    :param headers: extra request headers (``Accept: text/event-stream`` and
        ``Cache-Control: no-cache`` are always sent).
    :param last_event_id: resume after this id (sent as ``Last-Event-ID``).
    :param retry: reconnection time in seconds until the server sends
        ``retry:``.
    :param max_retry: upper bound of any wait between attempts, the
        server's ``retry:`` included.
    :param timeout: seconds without a single byte (keep-alive comments
        count) after which the connection counts as dropped; also bounds
        the wait for response headers. ``None`` waits forever.
    :param client: an ``httpx.AsyncClient`` to use instead of a new one; it
        is left open.
    :param retry_statuses: HTTP statuses retried like network errors
        (for example ``{502, 503}`` behind a proxy) instead of raised.
    :param max_reconnects: give up after this many consecutive reconnections
        without an accepted response (``0``: never reconnect); the last error
        is raised, or iteration ends if the server closed the stream cleanly.
        ``None`` retries forever, like a browser.
    :param max_event_size: the most bytes one event may take (see
        :class:`~trio_sse.EventParser`); ``None`` means no limit.
    :param rng: source of the backoff jitter (seed one for reproducible
        delays).
    :raises EventSourceError: while iterating, on an unusable response.
    :raises ParseError: while iterating, when an event exceeds
        ``max_event_size``; the stream is not retried.
    """
    if retry < 0 or max_retry < 0:
        raise ValueError("retry and max_retry must be >= 0")
    if timeout is not None and timeout <= 0:
        raise ValueError("timeout must be > 0 or None")
    if max_reconnects is not None and max_reconnects < 0:
        raise ValueError("max_reconnects must be >= 0 or None")
    owned = client is None
    http = httpx.AsyncClient() if client is None else client
    source = EventSource(
        http,
        str(url),
        headers=headers,
        last_event_id=last_event_id,
        retry=retry,
        max_retry=max_retry,
        timeout=timeout,
        retry_statuses=retry_statuses,
        max_reconnects=max_reconnects,
        max_event_size=max_event_size,
        rng=random.Random() if rng is None else rng,
    )
    try:
        yield source
    finally:
        await source.aclose()
        if owned:
            with trio.CancelScope(shield=True):
                await http.aclose()


# -- command line ------------------------------------------------------------


def _parse_header(value: str) -> tuple[str, str]:
    name, sep, field = value.partition(":")
    if not sep or not name.strip():
        raise argparse.ArgumentTypeError(f"expected 'Name: value', got {value!r}")
    return name.strip(), field.strip()


def _non_negative(value: str) -> int:
    try:
        number = int(value)
    except ValueError:
        number = -1
    if number < 0:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {value!r}")
    return number


def _positive_seconds(value: str) -> float:
    try:
        seconds = float(value)
    except ValueError:
        seconds = math.nan
    if not seconds > 0:
        raise argparse.ArgumentTypeError(f"expected seconds > 0, got {value!r}")
    return seconds


def _format_event(event: MessageEvent, as_json: bool) -> str:
    if as_json:
        record = {
            "type": event.type,
            "data": event.data,
            "id": event.last_event_id,
            "retry": event.retry,
        }
        # ASCII-only JSON: valid whatever encoding the terminal uses.
        return json.dumps(record) + "\n"
    lines = []
    if event.type != "message":
        lines.append(f"event: {event.type}")
    if event.last_event_id:
        lines.append(f"id: {event.last_event_id}")
    lines.extend(f"data: {line}" for line in event.data.split("\n"))
    return "\n".join(lines) + "\n\n"


def _build_argument_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m trio_sse.client",
        description="Print the events of a Server-Sent Events stream as they come.",
    )
    parser.add_argument("url", help="the event stream's URL")
    parser.add_argument(
        "-H",
        "--header",
        action="append",
        default=[],
        type=_parse_header,
        metavar="'NAME: VALUE'",
        help="extra request header (repeatable)",
    )
    parser.add_argument("--last-event-id", help="resume after this event id")
    parser.add_argument(
        "--json", action="store_true", help="print one JSON object per event and line"
    )
    parser.add_argument(
        "--max-reconnects",
        type=_non_negative,
        default=None,
        help="give up after this many reconnections in a row (default: never)",
    )
    parser.add_argument(
        "--timeout",
        type=_positive_seconds,
        default=45.0,
        help="seconds without data before reconnecting (default: 45)",
    )
    return parser


async def _print_events(args: argparse.Namespace) -> None:
    async with open_event_source(
        args.url,
        headers=dict(args.header),
        last_event_id=args.last_event_id,
        timeout=args.timeout,
        max_reconnects=args.max_reconnects,
    ) as source:
        async for event in source:
            sys.stdout.write(_format_event(event, args.json))
            sys.stdout.flush()


async def _cancel_on_signal(
    signals: AsyncIterator[int], scope: trio.CancelScope
) -> None:
    async for _ in signals:
        scope.cancel()
        return


async def _run(args: argparse.Namespace) -> int:
    """Print the stream; return the exit status.

    Ctrl-C (SIGINT) becomes a cancellation, delivered at the next checkpoint
    like any other. Left to trio's default handling, ``KeyboardInterrupt``
    may be raised at any bytecode, including inside httpx or httpcore while
    they hold a lock or half-update a connection; closing the response then
    (shielded) could wait forever for that lock, and the client would hang
    instead of exiting.
    """
    with trio.open_signal_receiver(signal.SIGINT) as signals:
        async with trio.open_nursery() as nursery:
            interrupted = trio.CancelScope()
            nursery.start_soon(_cancel_on_signal, signals, interrupted)
            try:
                with interrupted:
                    await _print_events(args)
            except EventSourceError as exc:
                sys.stderr.write(f"error: {exc}\n")
                return 1
            except BrokenPipeError:
                # The reader went away (``| head``): not an error of ours.
                with contextlib.suppress(OSError):
                    sys.stdout.close()
                return 0
            finally:
                nursery.cancel_scope.cancel()
    return 130 if interrupted.cancelled_caught else 0


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line client; return the process exit status.

    Exit status 0 when the stream ends (HTTP 204), 1 on an error, 130 on
    Ctrl-C.
    """
    args = _build_argument_parser().parse_args(argv)
    reconfigure = getattr(sys.stdout, "reconfigure", None)
    if reconfigure is not None:
        # Event data is any Unicode text; never die on an ASCII terminal.
        reconfigure(errors="backslashreplace")
    try:
        return trio.run(_run, args)
    except KeyboardInterrupt:
        # Ctrl-C before the signal handler above was installed.
        return 130


if __name__ == "__main__":
    sys.exit(main())
