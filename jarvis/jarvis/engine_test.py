"""The scheduler on real Prime streams (a tiny random Llama).

Run: bazel test //jarvis:engine_test
"""

import asyncio
import sys
import threading

import pytest
from jarvis_prime import PrimeModel

from jarvis.engine import Done, Engine, EngineBusy, EngineConfig, Failed, Piece
from jarvis.tiny_llama import make_tiny_llama

GREEDY = {"temperature": 0.0, "repetition_penalty": 1.0}


@pytest.fixture(scope="module")
def model():
    return PrimeModel.from_pretrained(make_tiny_llama())


def _chat(model, text, n):
    return lambda: model.chat_stream([{"role": "user", "content": text}], max_tokens=n, **GREEDY)


def test_round_robin_interleaves_and_matches_direct_generation(model):
    questions = [f"question number {i}" for i in range(4)]
    expected = [model.chat([{"role": "user", "content": q}], max_tokens=12, **GREEDY).text for q in questions]
    order = []
    with Engine(EngineConfig(max_active=4)) as engine:
        jobs = [engine.submit(_chat(model, q, 12)) for q in questions]
        texts, lock = [None] * 4, threading.Lock()

        def drain(i):
            pieces = []
            for event in jobs[i].events(timeout=120):
                with lock:
                    order.append(i)
                if isinstance(event, Piece):
                    pieces.append(event.text)
                elif isinstance(event, Done):
                    assert event.result.generated_tokens == 12 or event.result.finish_reason == "stop"
                    texts[i] = "".join(pieces)
                else:
                    raise event.error

        threads = [threading.Thread(target=drain, args=(i,)) for i in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert texts == expected  # interleaving did not mix up the streams' caches
    first_done = min(len(order) - order[::-1].index(i) - 1 for i in range(4))
    assert set(order[:first_done]) == {0, 1, 2, 3}, "every job made progress before any finished"


def test_cancel_frees_the_slot(model):
    with Engine(EngineConfig(max_active=1, max_queue=4)) as engine:
        long = engine.submit(_chat(model, "tell me everything", 1000))
        short = engine.submit(_chat(model, "hi", 3))
        events = long.events(timeout=120)
        assert isinstance(next(events), (Piece, Done))
        assert engine.stats() == {"active": 1, "queued": 1}
        long.cancel()
        last = list(events)[-1]
        assert isinstance(last, Done) and last.result.finish_reason == "cancelled"
        assert isinstance(list(short.events(timeout=120))[-1], Done)
        assert engine.stats() == {"active": 0, "queued": 0}


def test_full_queue_refuses(model):
    gate = threading.Event()

    def blocked():
        gate.wait(60)
        return model.chat_stream([{"role": "user", "content": "x"}], max_tokens=1)

    with Engine(EngineConfig(max_active=1, max_queue=1)) as engine:
        first = engine.submit(blocked)
        second = engine.submit(blocked)
        with pytest.raises(EngineBusy, match="waiting"):
            engine.submit(blocked)
        gate.set()
        for job in (first, second):
            assert isinstance(list(job.events(timeout=120))[-1], Done)


def test_a_failing_request_does_not_stop_the_worker(model):
    def broken():
        raise RuntimeError("boom")

    with Engine() as engine:
        bad = engine.submit(broken)
        good = engine.submit(
            lambda: model.stream("x", max_tokens=10000, **GREEDY)
        )  # Prime caps it to the window
        event = list(bad.events(timeout=60))[-1]
        assert isinstance(event, Failed) and "boom" in str(event.error)
        good.cancel()
        assert isinstance(list(good.events(timeout=120))[-1], Done)


def test_asyncio_consumers(model):
    async def main(engine):
        loop = asyncio.get_running_loop()

        async def one(q):
            pieces = []
            async for event in engine.submit(_chat(model, q, 5), loop=loop):
                if isinstance(event, Piece):
                    pieces.append(event.text)
                elif isinstance(event, Done):
                    return "".join(pieces), event.result
            raise AssertionError("no Done")

        return await asyncio.gather(*(one(f"q{i}") for i in range(3)))

    with Engine() as engine:
        results = asyncio.run(main(engine))
    assert all(text == result.text for text, result in results)


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-q"]))
