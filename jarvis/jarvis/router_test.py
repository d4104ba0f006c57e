"""Routing on Prime's real catalogue, and on a small catalogue of tiny local models.

Run: bazel test //jarvis:router_test
"""

import os
import sys
import threading

import pytest
from jarvis_prime import ModelInfo, PrimeModel, list_models

from jarvis.router import NoModelError, Router, RouterConfig, kind_of
from jarvis.tiny_llama import make_tiny_llama


def _info(name, *, template="chat", modalities=("text",), status="loadable", parameters=1_000_000):
    return ModelInfo(
        name=name,
        preset="custom",
        parameters=parameters,
        modalities=modalities,
        template=template,
        context_length=2048,
        memory_bytes={None: 1, "8bit": 1, "4bit": 1},
        status=status,
        default_quantization=None,
    )


@pytest.fixture(scope="module")
def dirs():
    return {os.path.basename(p): p for p in (make_tiny_llama(seed=0), make_tiny_llama(seed=1))}


@pytest.fixture
def router(dirs):
    small, big = sorted(dirs)
    catalogue = [
        _info(small, parameters=1_000_000),
        _info(big, parameters=2_000_000),
        _info(
            "prime-13b-reasoning-v1",
            template="reasoning",
            status="prime-13b-reasoning-v1 is not on this machine. Put it in X.",
        ),
        _info("prime-7b-vision-v1", modalities=("text", "image"), status="listed but not loadable yet"),
    ]
    loads = []

    def load(name, **kw):
        loads.append(name)
        return PrimeModel.from_pretrained(dirs[name], **kw)

    r = Router(RouterConfig(max_loaded=1), catalogue=lambda: catalogue, load=load)
    r.loads = loads
    return r


def test_real_catalogue_kinds():
    kinds = {i.name: kind_of(i) for i in list_models()}
    assert kinds == {
        "prime-135m-chat-v1": "chat",
        "prime-7b-chat-v1": "chat",
        "prime-13b-reasoning-v1": "reasoning",
        "prime-7b-vision-v1": "vision",
    }
    router = Router()
    assert router.best("vision") is None  # listed, not loadable yet
    assert router.best("chat") is not None  # the offline default at least


def test_best_installed_chat_model(router, dirs):
    small, big = sorted(dirs)
    route = router.route()
    assert (route.name, route.kind, route.notices) == (big, "chat", ())
    assert router.route(model=small).name == small


def test_missing_kind_falls_back_with_a_notice(router, dirs):
    big = sorted(dirs)[1]
    route = router.route(kind="reasoning")
    assert route.name == big
    (notice,) = route.notices
    assert notice.startswith("No reasoning model is installed (prime-13b-reasoning-v1: not on this machine)")
    assert notice.endswith(f"{big} answers instead")


def test_an_image_needs_vision(router, dirs):
    small = min(dirs)
    route = router.route(has_image=True, default=small)
    assert route.name == small
    assert "No vision model is installed" in route.notices[0] and "the image is left out" in route.notices[0]


def test_loaded_models_are_reused_and_evicted(router, dirs):
    small, big = sorted(dirs)
    first = router.route(model=small).model
    assert router.route(model=small).model is first
    router.route(model=big)
    assert router.loaded() == [big]  # max_loaded=1
    assert router.loads == [small, big]


def test_concurrent_requests_load_once(router, dirs):
    small = min(dirs)
    routes = []
    threads = [threading.Thread(target=lambda: routes.append(router.route(model=small))) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert router.loads == [small] and len({id(r.model) for r in routes}) == 1


def test_nothing_installed():
    router = Router(catalogue=lambda: [_info("prime-7b-chat-v1", status="not on this machine")])
    with pytest.raises(NoModelError, match="No chat model is installed"):
        router.route()
    with pytest.raises(ValueError, match="kind"):
        router.route(kind="poetry")


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-q"]))
