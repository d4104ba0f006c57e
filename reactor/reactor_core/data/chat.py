"""Examples to (input_ids, loss_mask) with the tokenizer's chat template.

Convention: `loss_mask[t] == 1` marks token t as a *target*: the loss includes predicting
token t from tokens[:t]. The first token of a sequence has no predecessor, so its mask
bit never produces a loss (see packing.shift_targets for the next-token shift).

The mask is exact at the character level: the conversation is rendered once in full and
once per assistant turn up to that turn (with and without the generation prompt), so
each assistant turn is a character span of the full text. The full text is tokenized
with offsets and a token is a target when its characters overlap a span. A span covers
the turn's content and its end-of-turn marker (e.g. `<|im_end|>`), not the trailing
newline the model never generates.
"""

import jinja2
import numpy as np

from reactor_core.data import schema

# ChatML, for tokenizers without a chat template.
FALLBACK_CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)


class ChatTemplate:
    """Renders conversations with a tokenizer's chat template (or the ChatML fallback)."""

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer
        self.is_fallback = not getattr(tokenizer, "chat_template", None)

    def render(self, messages, *, add_generation_prompt=False):
        """Text of `messages` (Message or {"role","content"} items)."""
        msgs = [
            m if isinstance(m, dict) else {"role": m.role, "content": m.content} for m in messages
        ]
        try:
            return self.tokenizer.apply_chat_template(
                msgs,
                chat_template=FALLBACK_CHAT_TEMPLATE if self.is_fallback else None,
                add_generation_prompt=add_generation_prompt,
                tokenize=False,
            )
        except (jinja2.TemplateError, ValueError, TypeError) as e:
            raise schema.DataError(f"the chat template rejected this conversation: {e}") from None

    def assistant_spans(self, messages):
        """(full text, [(start, end) char span of each assistant turn])."""
        full = self.render(messages)
        spans = []
        for i, m in enumerate(messages):
            if m.role != "assistant":
                continue
            start = len(self._prefix(messages[:i], full, add_generation_prompt=True, turn=i))
            end = len(
                self._prefix(messages[: i + 1], full, add_generation_prompt=False, turn=i).rstrip()
            )
            if end <= start:
                raise schema.DataError(f"the chat template rendered assistant turn {i} as empty")
            spans.append((start, end))
        return full, spans

    def _prefix(self, messages, full, *, add_generation_prompt, turn):
        text = self.render(messages, add_generation_prompt=add_generation_prompt)
        if not full.startswith(text):
            raise schema.DataError(
                f"the chat template does not render turn {turn} as a prefix of the whole "
                "conversation, so the assistant-only loss mask cannot be exact; "
                "use loss_on='all' or a prefix-stable template"
            )
        return text


def pad_token_id(tokenizer):
    """The id used for padding: pad, else EOS, else 0 (padding is never trained on)."""
    for name in ("pad_token_id", "eos_token_id"):
        value = getattr(tokenizer, name, None)
        if value is not None:
            return int(value)
    return 0


def encode_text(tokenizer, text):
    """A {"text"} row: the tokenizer's own special tokens plus EOS; every token a target."""
    ids = list(tokenizer(text)["input_ids"])
    eos = getattr(tokenizer, "eos_token_id", None)
    if eos is not None and (not ids or ids[-1] != eos):
        ids.append(eos)
    ids = np.asarray(ids, np.int32)
    return ids, np.ones(len(ids), np.uint8)


def encode_chat(template, messages, *, loss_on="assistant"):
    """A conversation: (input_ids int32, loss_mask uint8) of equal length."""
    if loss_on == "all":
        ids, _ = _tokenize(template.tokenizer, template.render(messages), [])
        return ids, np.ones(len(ids), np.uint8)
    full, spans = template.assistant_spans(messages)
    return _tokenize(template.tokenizer, full, spans)


def encode_preference(template, example):
    """A preference pair: ((chosen_ids, chosen_mask), (rejected_ids, rejected_mask)).

    The masks mark the response tokens (content and end-of-turn marker) only.
    """
    out = []
    for response in (example.chosen, example.rejected):
        messages = example.prompt + (schema.Message("assistant", response),)
        full, spans = template.assistant_spans(messages)
        out.append(_tokenize(template.tokenizer, full, spans[-1:]))
    return tuple(out)


def _tokenize(tokenizer, text, spans):
    """Token ids of `text` and a mask of the tokens overlapping any char span."""
    if getattr(tokenizer, "is_fast", False):
        enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
        ids = np.asarray(enc["input_ids"], np.int32)
        mask = np.zeros(len(ids), np.uint8)
        for i, (s, e) in enumerate(enc["offset_mapping"]):
            for a, b in spans:
                if (s < b and e > a) if e > s else a <= s < b:
                    mask[i] = 1
                    break
        return ids, mask
    # Slow tokenizers have no offsets: tokenize the pieces between span edges.
    edges = sorted({0, len(text), *(x for span in spans for x in span)})
    ids, mask = [], []
    for a, b in zip(edges[:-1], edges[1:]):
        piece = tokenizer(text[a:b], add_special_tokens=False)["input_ids"]
        inside = any(s <= a and b <= e for s, e in spans)
        ids.extend(piece)
        mask.extend([int(inside)] * len(piece))
    return np.asarray(ids, np.int32), np.asarray(mask, np.uint8)
