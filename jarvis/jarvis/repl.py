"""The terminal chat: streaming answers, stored conversations, slash commands, feedback.

Run it:  bazel run //jarvis:assistant                      (the REPL)
         bazel run //jarvis:assistant -- --prompt "Hi"     (one answer, then exit)
         echo "Hi" | bazel run //jarvis:assistant          (piped stdin: the same)
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import os
import sys
import threading

from jarvis_prime import PrimeError

import jarvis
from jarvis import context, conversation
from jarvis.context import ContextOverflowError
from jarvis.memory import Memory, Message, NotFoundError
from jarvis.paths import user_path
from jarvis.router import Route, Router, kind_of, short_status
from jarvis.sampling import DEFAULT, Sampling, from_json

HELP = """Commands:
  /help               this list
  /new                start a new conversation
  /history            recent conversations (ids for /load)
  /load ID            resume a conversation (an id prefix is enough)
  /model [NAME]       list the models, or switch to NAME (a catalogue name or a model directory)
  /system [TEXT]      show or set the system prompt ("/system default" restores Jarvis's)
  /reasoning on|off   answer with the reasoning model; show|hide its thinking
  /image PATH         attach an image to your next message (goes to the vision model)
  /good, /bad [TEXT]  rate the last answer (TEXT: a better answer, for training)
  /retry              answer the last question again (rate both to make a preference pair)
  /stats              tokens and speed
  /exit               quit (also Ctrl-D)
Start a message with // to send a literal leading slash."""


@dataclasses.dataclass(frozen=True)
class ChatConfig:
    system_prompt: str | None = None  # None: Jarvis's default (a reasoning model keeps its own)
    reasoning: bool = False
    show_thinking: bool = True
    stats: bool = True  # a line of tokens and speed after each answer


class Console:
    """Where text goes. Scripted runs keep stdout for the answer alone."""

    def __init__(self, *, out=None, err=None, color: bool | None = None, scripted: bool = False):
        self.out = out or sys.stdout
        self.err = err or sys.stderr
        self.scripted = scripted
        if color is None:
            color = self.out.isatty() and not os.environ.get("NO_COLOR") and os.environ.get("TERM") != "dumb"
        self.color = color

    def _style(self, text: str, code: str) -> str:
        return f"\033[{code}m{text}\033[0m" if self.color else text

    def answer(self, text: str) -> None:
        self.out.write(text)
        self.out.flush()

    def thinking(self, text: str) -> None:
        (self.err if self.scripted else self.out).write(self._style(text, "2"))
        (self.err if self.scripted else self.out).flush()

    def info(self, text: str) -> None:
        """Notices, stats and listings: to stderr in scripted runs."""
        stream = self.err if self.scripted else self.out
        stream.write(self._style(text, "2") + "\n")
        stream.flush()

    def notice(self, text: str) -> None:
        stream = self.err if self.scripted else self.out
        stream.write(self._style(f"[{text}]", "33") + "\n")
        stream.flush()

    def error(self, text: str) -> None:
        stream = self.err if self.scripted else self.out
        stream.write(self._style(f"error: {text}", "31") + "\n")
        stream.flush()


class Session:
    """One user's chat: the current conversation, model choice and settings."""

    def __init__(
        self,
        memory: Memory,
        router: Router,
        *,
        sampling: Sampling | None = None,
        config: ChatConfig | None = None,
        console: Console | None = None,
        model: str | None = None,
    ):
        config = config or ChatConfig()
        self.memory = memory
        self.router = router
        self.sampling = sampling or DEFAULT
        self.console = console or Console()
        self.model_name = model  # None: the router's chat model
        self.system_prompt = config.system_prompt
        self.reasoning = config.reasoning
        self.show_thinking = config.show_thinking
        self.show_stats = config.stats
        self.conv = None
        self.image: str | None = None
        self.last_answer: Message | None = None
        self.last_result = None
        self.totals = {"answers": 0, "tokens": 0, "seconds": 0.0}
        self._noticed: set[str] = set()  # a fallback notice is shown once per session
        self._warming: threading.Thread | None = None

    # ---- model and conversation ----

    def route(self) -> Route:
        route = self.router.route(
            kind="reasoning" if self.reasoning else "chat",
            has_image=self.image is not None,
            default=self.model_name,
        )
        for n in route.notices:
            if n not in self._noticed or self.image is not None:
                self.console.notice(n)
            self._noticed.add(n)
        return route

    def _conversation(self, route: Route):
        if self.conv is None:
            self.conv = self.memory.create_conversation(
                model=self.model_name,
                system_prompt=self.system_prompt,
                sampling=self.sampling.to_json(),
                reasoning=self.reasoning,
            )
        return self.conv

    def resume(self, conversation_id: str, *, replay: bool = True) -> None:
        conv = self.memory.conversation(conversation_id)
        self.conv = conv
        self.model_name = conv.model
        self.system_prompt = conv.system_prompt
        self.reasoning = conv.reasoning
        self.sampling = (
            from_json(conv.sampling) if conv.sampling not in (None, "{}") else self.sampling
        )
        messages = self.memory.messages(conv.id)
        answers = [m for m in messages if m.role == "assistant"]
        self.last_answer = answers[-1] if answers else None
        self.console.info(f"Conversation {conv.id}: {conv.title or '(untitled)'} ({len(messages)} messages)")
        if replay:
            for m in messages:
                who = "you> " if m.role == "user" else "jarvis> "
                self.console.info(who + m.content)

    def _save_settings(self, **fields) -> None:
        if self.conv is not None:
            self.conv = self.memory.update_conversation(self.conv.id, **fields)

    # ---- answering ----

    def warm_up(self) -> None:
        """Reads the system prompt into the model's cache in the background while the user
        types the first message (the model's programs compiled when it loaded)."""

        def work():
            # Any problem shows on the first real answer, with its message.
            with contextlib.suppress(Exception):
                conversation.warm_up(self.route(), self.sampling)

        self._warming = threading.Thread(target=work, name="jarvis-warm-up", daemon=True)
        self._warming.start()

    def ask(self, text: str) -> Message | None:
        """Answers `text` in the current conversation, streaming; None when nothing was said."""
        if self._warming is not None:
            self._warming.join()
            self._warming = None
        try:
            route = self.route()
        except PrimeError as e:
            self.console.error(str(e))
            return None
        conv = self._conversation(route)
        attachments = (self.image,) if self.image else ()
        self.image = None
        try:
            turn = conversation.prepare_turn(
                self.memory, conv, route, text, self.sampling, attachments=attachments
            )
        except ContextOverflowError as e:
            self.console.error(str(e))
            return None
        if turn.notice:
            self.console.notice(turn.notice)
        return self._answer(turn, route, attachments)

    def retry(self) -> Message | None:
        if self.conv is None or self.last_answer is None:
            self.console.error("Nothing to retry yet")
            return None
        old = self.last_answer
        user = self.memory.message(old.reply_to) if old.reply_to else None
        if user is None:
            self.console.error("The last answer has no question to retry")
            return None
        route = self.route()
        self.memory.supersede(old.id)
        history = [m for m in self.memory.messages(self.conv.id) if m.id < user.id]
        system = conversation.system_prompt_for(self.conv.system_prompt, route)
        wanted = ([{"role": "system", "content": system}] if system else []) + [m.as_chat() for m in history]
        wanted.append(user.as_chat())
        try:
            fitted = context.fit(
                wanted,
                route.model.count_tokens,
                window=route.model.context_length,
                reserve=self.sampling.max_tokens,
            )
        except ContextOverflowError as e:
            self.console.error(str(e))
            return None
        turn = conversation.Turn(self.conv.id, user, fitted.messages, system, fitted, None)
        return self._answer(turn, route, user.attachments)

    def _answer(self, turn: conversation.Turn, route: Route, attachments) -> Message | None:
        kwargs = self.sampling.kwargs()
        if route.kind == "vision" and attachments:
            kwargs["images"] = list(attachments)
        splitter = conversation.splitter_for(route)
        answer, thinking = [], []
        shown = {"thinking": False}

        def show(parts):
            for kind, piece in parts:
                if kind == "thinking":
                    thinking.append(piece)
                    if self.show_thinking:
                        if not shown["thinking"]:
                            self.console.thinking("(thinking) ")
                            shown["thinking"] = True
                        self.console.thinking(piece)
                else:
                    if shown["thinking"] and not answer:
                        self.console.answer("\n")
                    answer.append(piece)
                    if not (splitter.reclassified and self.show_thinking):
                        self.console.answer(piece)

        if not self.console.scripted:
            self.console.answer("jarvis> ")
        stream = None
        try:
            stream = route.model.chat_stream(turn.messages, **kwargs)
            for piece in stream:
                show(splitter.feed(piece))
        except KeyboardInterrupt:
            if stream is not None:
                stream.close()
            self.console.answer("\n")
            self.console.notice("stopped")
        except PrimeError as e:
            self.console.answer("\n")
            self.console.error(str(e))
            return None
        show(splitter.finish())
        if splitter.reclassified:
            thinking.clear()
        self.console.answer("\n")
        result = stream.result if stream is not None else None
        if not answer and not thinking:
            return None
        message = conversation.save_answer(
            self.memory, turn, route, self.sampling, "".join(answer), "".join(thinking), result
        )
        self.last_answer = message
        if result is not None:
            self.last_result = result
            self.totals["answers"] += 1
            self.totals["tokens"] += result.generated_tokens
            if result.tokens_per_second:
                self.totals["seconds"] += (
                    result.time_to_first_token + (result.generated_tokens - 1) / result.tokens_per_second
                )
            if self.show_stats:
                self.console.info(_stats_line(result))
        return message

    # ---- commands ----

    def command(self, line: str) -> bool:
        """Runs a slash command; False means exit."""
        name, _, arg = line.strip().partition(" ")
        arg = arg.strip()
        handler = getattr(self, "_cmd_" + name[1:].lower(), None)
        if handler is None:
            self.console.error(f"Unknown command {name}; /help lists them")
            return True
        try:
            return handler(arg) is not False
        except (PrimeError, NotFoundError, ValueError, OSError) as e:
            self.console.error(str(e))
            return True

    def _cmd_help(self, arg):
        self.console.info(HELP)

    def _cmd_exit(self, arg):
        return False

    _cmd_quit = _cmd_exit

    def _cmd_new(self, arg):
        self.conv = None
        self.last_answer = None
        self.image = None
        self.console.info("New conversation.")

    def _cmd_history(self, arg):
        convs = self.memory.conversations(limit=int(arg) if arg.isdigit() else 20)
        if not convs:
            self.console.info("No conversations yet.")
        for c in convs:
            mark = "*" if self.conv is not None and c.id == self.conv.id else " "
            when = datetime.datetime.fromtimestamp(c.updated_at).strftime("%Y-%m-%d %H:%M")
            self.console.info(f"{mark} {c.id}  {when}  {c.message_count:3d} msgs  {c.title or '(untitled)'}")

    def _cmd_load(self, arg):
        if not arg:
            raise ValueError("Usage: /load ID (see /history)")
        self.resume(arg)

    def _cmd_model(self, arg):
        if not arg:
            current = self.model_name or self.router.chat_model_name()
            for info in self.router.catalogue():
                mark = "*" if info.name == current else " "
                self.console.info(f"{mark} {info.name:26s} {kind_of(info):9s} {short_status(info)}")
            return
        name = user_path(arg) if os.sep in arg or arg.startswith(".") else arg
        route = self.router.route(model=name)  # loads it now, so a bad name fails here
        for n in route.notices:
            self.console.notice(n)
        self.model_name = name
        if route.kind == "reasoning" and not self.reasoning:
            self.reasoning = True
        self._save_settings(model=name, reasoning=self.reasoning)
        self.console.info(f"Model: {route.name} ({route.model.backend}, {_quantization(route)})")

    def _cmd_system(self, arg):
        if not arg:
            shown = (
                self.system_prompt if self.system_prompt is not None else conversation.DEFAULT_SYSTEM_PROMPT
            )
            self.console.info(f"System prompt: {shown}")
            return
        self.system_prompt = None if arg == "default" else arg
        self._save_settings(system_prompt=self.system_prompt)
        self.console.info("System prompt set.")

    def _cmd_reasoning(self, arg):
        if arg in ("on", "off"):
            self.reasoning = arg == "on"
            self._save_settings(reasoning=self.reasoning)
            route = self.route()
            self.console.info(f"Reasoning {arg}: {route.name} answers.")
        elif arg in ("show", "hide"):
            self.show_thinking = arg == "show"
            self.console.info(f"Thinking is {'shown' if self.show_thinking else 'hidden'}.")
        else:
            raise ValueError("Usage: /reasoning on|off|show|hide")

    def _cmd_image(self, arg):
        if not arg:
            raise ValueError("Usage: /image PATH")
        path = user_path(arg)
        if not os.path.isfile(path):
            raise ValueError(f"No image file at {path}")
        self.image = path
        self.console.info(f"Image attached to your next message: {path}")

    def _rate(self, rating: int, correction: str | None):
        if self.last_answer is None:
            raise ValueError("There is no answer to rate yet")
        self.memory.rate(self.last_answer.id, rating, correction)

    def _cmd_good(self, arg):
        self._rate(1, None)
        self.console.info("Rated good. Thanks!")

    def _cmd_bad(self, arg):
        self._rate(-1, arg or None)
        hint = "" if arg else " Add a better answer with /bad TEXT, or /retry and rate the new one."
        self.console.info("Rated bad." + hint)

    def _cmd_retry(self, arg):
        self.retry()

    def _cmd_stats(self, arg):
        try:
            route = self.router.route(kind="reasoning" if self.reasoning else "chat", default=self.model_name)
            m = route.model
            self.console.info(
                f"model        {route.name} ({m.backend} backend, {_quantization(route)}, "
                f"{route.model.context_length}-token window)"
            )
        except PrimeError as e:
            self.console.info(f"model        unavailable: {e}")
        if self.last_result is not None:
            self.console.info("last answer  " + _stats_line(self.last_result).strip("[]"))
        t = self.totals
        rate = t["tokens"] / t["seconds"] if t["seconds"] else 0.0
        self.console.info(
            f"this session {t['answers']} answers, {t['tokens']} tokens, {rate:.1f} tokens/s overall"
        )
        if self.conv is not None:
            count = len(self.memory.messages(self.conv.id))
            self.console.info(f"conversation {self.conv.id} ({count} messages)")
        s = self.sampling
        self.console.info(
            f"sampling     max_tokens={s.max_tokens} temperature={s.temperature} top_p={s.top_p} top_k={s.top_k} "
            f"min_p={s.min_p} repetition_penalty={s.repetition_penalty} seed={s.seed}"
        )


def _quantization(route: Route) -> str:
    q = route.model.quantization
    return f"{q} weights" if q else "full-precision weights"


def _stats_line(result) -> str:
    return (
        f"[{result.generated_tokens} tokens · {result.tokens_per_second:.1f} tok/s · "
        f"first token {result.time_to_first_token:.2f} s · prompt {result.prompt_tokens} tokens · {result.finish_reason}]"
    )


def run(session: Session) -> int:
    """The interactive loop, until /exit or end of input."""
    try:
        import readline

        history = os.path.join(os.path.dirname(session.memory.path), "repl_history")
        try:
            readline.read_history_file(history)
        except OSError:
            pass
    except ImportError:
        readline, history = None, None
    console = session.console
    try:
        route = session.route()
        console.info(
            f"Jarvis {jarvis.__version__} · {route.name} ({route.model.backend}) · data in {session.memory.path}\n"
            "Type a message, /help for commands, /exit to quit."
        )
    except PrimeError as e:
        console.error(str(e))
        return 1
    session.warm_up()
    try:
        while True:
            try:
                line = input("you> ")
                while line.endswith("\\"):
                    line = line[:-1] + "\n" + input("...> ")
            except EOFError:
                console.answer("\n")
                return 0
            except KeyboardInterrupt:
                console.answer("\n")
                console.info("(/exit or Ctrl-D quits)")
                continue
            if not line.strip():
                continue
            if line.startswith("/") and not line.startswith("//"):
                if not session.command(line):
                    return 0
            else:
                session.ask(line[1:] if line.startswith("//") else line)
    finally:
        if readline is not None:
            try:
                readline.write_history_file(history)
            except OSError:
                pass


def run_once(session: Session, prompt: str) -> int:
    """One answer to stdout (notices to stderr); 1 when nothing could be answered."""
    return 0 if session.ask(prompt) is not None else 1
