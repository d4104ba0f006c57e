"""The web chat page in headless Chromium, on the real offline default model
(prime-135m-chat-v1): type a question, see the answer stream in, find it stored.

Run: bazel test //jarvis:web_test     (needs Chromium; tagged requires-chromium)
"""

import json
import sys
import tempfile

import pytest

from jarvis.cdp import Chromium, find_chromium
from jarvis.live_server import running
from jarvis.sampling import Sampling

QUESTION = "What is the capital of France?"
SNAPSHOT = """JSON.stringify([...document.querySelectorAll('.message.assistant')].map(d => ({
  state: d.dataset.state, chunks: Number(d.dataset.chunks || 0), text: d.querySelector('.text').textContent})))"""


@pytest.fixture(scope="module")
def chromium():
    binary = find_chromium()
    if binary is None:
        pytest.skip(
            "Chromium is not installed (apt-get install chromium); filter with --test_tag_filters=-requires-chromium"
        )
    with tempfile.TemporaryDirectory() as profile:
        browser = Chromium(binary, profile)
        try:
            yield browser
        finally:
            browser.close()


def test_type_a_question_and_see_the_streamed_answer(chromium, tmp_path, monkeypatch):
    monkeypatch.setenv("PRIME_HOME", str(tmp_path / "prime"))  # Prime's store, writable in a test sandbox
    sampling = Sampling(max_tokens=32, temperature=0.0)
    with running(str(tmp_path / "home"), "prime-135m-chat-v1", sampling=sampling) as server:
        page = chromium.open_page(server.url + "/")
        page.wait_for("document.readyState === 'complete' && !!document.getElementById('input')")
        page.eval("document.getElementById('input').focus()")
        page.type(QUESTION)
        page.press_enter()

        snapshots = []
        page.wait_for("document.querySelectorAll('.message.assistant').length === 1", timeout=30)
        while True:
            (answer,) = json.loads(page.eval(SNAPSHOT))
            snapshots.append(answer)
            if answer["state"] == "done":
                break
            assert len(snapshots) < 20000, "the answer never finished"
            page.eval("new Promise(r => setTimeout(r, 20))")

        final = snapshots[-1]
        assert final["text"].strip(), "the answer is empty"
        assert page.eval("document.getElementById('notices').querySelectorAll('.error').length") == 0
        partial = [
            s for s in snapshots if s["state"] == "streaming" and 0 < len(s["text"]) < len(final["text"])
        ]
        assert final["chunks"] > 1 and partial, "the answer did not arrive in pieces"
        assert page.eval("document.querySelector('.message.user .text').textContent") == QUESTION

        (conv,) = server.state.memory.conversations()
        user, answer = server.state.memory.messages(conv.id)
        assert user.content == QUESTION and answer.content == final["text"]
        page.wait_for(
            f"[...document.querySelectorAll('#conversations li')].some(li => li.dataset.id === '{conv.id}')"
        )

        # A new chat clears the page; the list brings the stored conversation back.
        page.eval("document.getElementById('new-chat').click()")
        page.wait_for("document.querySelectorAll('.message').length === 0")
        page.eval(f"document.querySelector('#conversations li[data-id=\"{conv.id}\"]').click()")
        page.wait_for("document.querySelectorAll('.message').length === 2")
        # The thumbs-up on the reloaded answer is stored as feedback.
        page.eval("document.querySelector('.message.assistant .meta button').click()")
        page.wait_for("!!document.querySelector('.message.assistant .meta button.chosen')")
        assert server.state.memory.message(answer.id).rating == 1


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-q"]))
