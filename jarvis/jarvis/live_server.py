"""Test helper: a Jarvis server on a free loopback port, serving a given model directory."""

from __future__ import annotations

import contextlib
import dataclasses

from jarvis.engine import EngineConfig
from jarvis.router import RouterConfig
from jarvis.sampling import Sampling
from jarvis.server import Background, ServerConfig, build_state


@contextlib.contextmanager
def running(
    home: str,
    model: str,
    *,
    config: ServerConfig | None = None,
    engine: EngineConfig | None = None,
    sampling: Sampling | None = None,
):
    """Yields the Background server (`.url`, `.state`); stops it and its engine afterwards."""
    config = config or ServerConfig()
    config = dataclasses.replace(config, port=0) if config.port == 8000 else config
    state = build_state(
        config,
        router_config=RouterConfig(model=model),
        engine_config=engine,
        sampling=sampling or Sampling(temperature=0.0, max_tokens=32),
        home=home,
    )
    try:
        with Background(state) as server:
            yield server
    finally:
        state.engine.close()
        state.memory.close()
