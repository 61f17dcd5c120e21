"""Property test: a Broadcaster behaves like a small model of its semantics.

Random interleavings of subscribe (with each lag policy), send, read
(``receive_nowait``) and close on one key; after every step the broadcaster
must agree with a model of held items, lags and ends.
"""

from __future__ import annotations

from collections import deque

import trio
from hypothesis import given, settings
from hypothesis import strategies as st

from trio_sse import Broadcaster, BroadcastStream, Lagged, LagPolicy

POLICIES = [None, LagPolicy.END, LagPolicy.SKIP]


class ModelSubscriber:
    def __init__(self, policy: LagPolicy | None) -> None:
        self.policy = policy
        self.held: deque[int] = deque()
        self.pending = 0  # items dropped since the last Lagged
        self.missed = 0
        self.ended = False  # END: no more items; drains what it holds
        self.closed = False

    def offer(self, item: int, buffer: int) -> bool:
        """Offer one sent item; return whether it was queued."""
        if self.ended or self.closed:
            return False
        if len(self.held) < buffer:
            self.held.append(item)
            return True
        self.missed += 1
        if self.policy is LagPolicy.END:
            self.ended = True
            return False
        self.held.popleft()
        self.held.append(item)
        if self.policy is None:
            self.pending += 1
        return True


ops = st.lists(
    st.one_of(
        st.tuples(st.just("subscribe"), st.sampled_from(POLICIES)),
        st.tuples(st.just("send"), st.integers(1, 3)),
        st.tuples(st.just("read"), st.integers(0, 3)),
        st.tuples(st.just("read"), st.integers(0, 3)),
        st.tuples(st.just("close"), st.integers(0, 3)),
    ),
    max_size=60,
)


@settings(max_examples=300, deadline=None)
@given(
    buffer=st.integers(1, 4),
    first=st.lists(st.sampled_from(POLICIES), min_size=1, max_size=3),
    steps=ops,
)
def test_broadcaster_matches_the_model(
    buffer: int, first: list[LagPolicy | None], steps: list[tuple[str, object]]
) -> None:
    steps = [("subscribe", policy) for policy in first] + steps

    async def main() -> None:
        bc: Broadcaster[str, int] = Broadcaster(buffer)
        streams: list[BroadcastStream[int]] = []
        models: list[ModelSubscriber] = []
        counter = 0
        for op, arg in steps:
            if op == "subscribe":
                assert arg is None or isinstance(arg, LagPolicy)
                streams.append(bc.subscribe("k").on_lag(arg))
                models.append(ModelSubscriber(arg))
            elif op == "send":
                assert isinstance(arg, int)
                for _ in range(arg):
                    counter += 1
                    expected = sum(m.offer(counter, buffer) for m in models)
                    assert bc.send("k", counter) == expected
            elif streams:
                assert isinstance(arg, int)
                i = arg % len(streams)
                stream, model = streams[i], models[i]
                if op == "close":
                    await stream.aclose()
                    model.closed = True
                    model.held.clear()
                elif model.closed or (model.ended and not model.held):
                    try:
                        stream.receive_nowait()
                        raise AssertionError("expected the end")
                    except trio.EndOfChannel:
                        model.closed = True
                elif model.pending:
                    try:
                        stream.receive_nowait()
                        raise AssertionError("expected Lagged")
                    except Lagged as exc:
                        assert exc.missed == model.pending
                        model.pending = 0
                elif model.held:
                    assert stream.receive_nowait() == model.held.popleft()
                else:
                    try:
                        stream.receive_nowait()
                        raise AssertionError("expected WouldBlock")
                    except trio.WouldBlock:
                        pass
            registered = [m for m in models if not (m.closed or m.ended)]
            assert bc.subscriber_count("k") == len(registered)
            assert bc.keys() == (["k"] if registered else [])
            for stream, model in zip(streams, models, strict=True):
                assert stream.missed == model.missed
        for stream in streams:
            await stream.aclose()

    trio.run(main)
