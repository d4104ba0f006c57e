"""Jarvis's command line: chat (the default), serve, export.

  bazel run //jarvis:assistant                                   # terminal chat
  bazel run //jarvis:assistant -- --prompt "What is JAX?"        # one answer
  echo "What is JAX?" | bazel run //jarvis:assistant             # piped stdin
  bazel run //jarvis:assistant -- serve --port 8000              # OpenAI-compatible server + web page
  bazel run //jarvis:assistant -- export --format=preference --output=prefs.jsonl

Data lives in $JARVIS_HOME (default ~/.local/share/jarvis); --home overrides it.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys

import jarvis

SUBCOMMANDS = ("chat", "serve", "export")


def _sampling_flags(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("sampling (defaults: jarvis.sampling.Sampling)")
    g.add_argument("--max-tokens", type=int, dest="max_tokens")
    g.add_argument("--temperature", type=float)
    g.add_argument("--top-p", type=float, dest="top_p")
    g.add_argument("--top-k", type=int, dest="top_k")
    g.add_argument("--min-p", type=float, dest="min_p")
    g.add_argument("--repetition-penalty", type=float, dest="repetition_penalty")
    g.add_argument("--seed", type=int)


def _model_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--model", help="catalogue name or model directory (default: the best installed chat model)"
    )
    p.add_argument("--quantization", help="none, 8bit or 4bit (default: the machine's default for the model)")
    p.add_argument("--backend", help="auto, jax or mlx")
    p.add_argument("--device", help="auto, cpu, gpu, ...")
    p.add_argument("--home", help="data directory (default: $JARVIS_HOME or ~/.local/share/jarvis)")


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="assistant", description=f"Jarvis {jarvis.__version__}: the assistant on Prime"
    )
    p.add_argument("--version", action="version", version=f"jarvis {jarvis.__version__}")
    sub = p.add_subparsers(dest="command")

    chat = sub.add_parser("chat", help="terminal chat (the default)")
    _model_flags(chat)
    _sampling_flags(chat)
    chat.add_argument("--prompt", help="answer this one message and exit")
    chat.add_argument("--system", help="system prompt")
    chat.add_argument("--resume", metavar="ID", help="continue a stored conversation")
    chat.add_argument(
        "--reasoning", action="store_true", default=None, help="answer with the reasoning model"
    )
    chat.add_argument("--hide-thinking", action="store_true", help="hide a reasoning model's thinking")
    chat.add_argument("--no-stats", action="store_true", help="no tokens/speed line after answers")

    serve = sub.add_parser("serve", help="the OpenAI-compatible HTTP server and web page")
    _model_flags(serve)
    _sampling_flags(serve)
    serve.add_argument("--host", help="bind address (default 127.0.0.1; others need an API key)")
    serve.add_argument("--port", type=int)
    serve.add_argument(
        "--api-key", dest="api_key", help="required as 'Authorization: Bearer KEY' (default: $JARVIS_API_KEY)"
    )
    serve.add_argument("--max-request-bytes", type=int, dest="max_request_bytes")
    serve.add_argument("--max-tokens-limit", type=int, dest="max_tokens_limit")
    serve.add_argument("--max-concurrent", type=int, dest="max_active", help="streams generated together")
    serve.add_argument("--max-queue", type=int, dest="max_queue", help="requests waiting beyond those")
    serve.add_argument("--no-warmup", action="store_false", dest="warmup", default=None)

    export = sub.add_parser("export", help="write stored conversations as training JSONL")
    export.add_argument("--format", choices=("messages", "preference"), required=True)
    export.add_argument("--output", required=True)
    export.add_argument("--overwrite", action="store_true", default=None)
    export.add_argument("--rated-only", action="store_true", default=None, dest="rated_only")
    export.add_argument("--home")
    return p


def _given(args, *names) -> dict:
    """The flags the user set (argparse default None), so dataclass defaults stay the only defaults."""
    return {n: getattr(args, n) for n in names if getattr(args, n, None) is not None}


def _sampling(args):
    from jarvis.sampling import defaults

    return defaults(
        **_given(args, "max_tokens", "temperature", "top_p", "top_k", "min_p", "repetition_penalty", "seed")
    )


def _router_config(args):
    from jarvis.paths import user_path
    from jarvis.router import RouterConfig

    given = _given(args, "model", "quantization", "backend", "device")
    if "model" in given and (os.sep in given["model"] or given["model"].startswith(".")):
        given["model"] = user_path(given["model"])
    return RouterConfig(**given)


def _home(args) -> str | None:
    from jarvis.paths import user_path

    return user_path(args.home) if args.home else None


def chat(args) -> int:
    from jarvis.memory import Memory
    from jarvis.repl import ChatConfig, Console, Session, run, run_once
    from jarvis.router import Router

    prompt = args.prompt
    if prompt is None and not sys.stdin.isatty():
        prompt = sys.stdin.read().strip()
        if not prompt:
            print("error: stdin was empty: nothing to answer", file=sys.stderr)
            return 2
    scripted = prompt is not None
    config = ChatConfig(
        **_given(args, "reasoning"),
        **({"system_prompt": args.system} if args.system is not None else {}),
        **({"show_thinking": False} if args.hide_thinking else {}),
        **({"stats": False} if args.no_stats or scripted else {}),
    )
    # One person chatting: two cached conversations (this one and the warm-up's or the last
    # one's), and decode programs for batches of one and two only, so start-up compiles less.
    router_config = dataclasses.replace(_router_config(args), slots=2)
    with Memory.open(_home(args)) as memory:
        session = Session(
            memory,
            Router(router_config),
            sampling=_sampling(args),
            config=config,
            console=Console(scripted=scripted),
            model=router_config.model,
        )
        if args.resume:
            session.resume(args.resume, replay=not scripted)
        return run_once(session, prompt) if scripted else run(session)


def serve(args) -> int:
    from jarvis.engine import EngineConfig
    from jarvis.server import ServerConfig, build_state
    from jarvis.server import serve as run_server

    given = _given(args, "host", "port", "api_key", "max_request_bytes", "max_tokens_limit", "warmup")
    given.setdefault("api_key", os.environ.get("JARVIS_API_KEY") or None)
    config = ServerConfig(**given)
    state = build_state(
        config,
        router_config=_router_config(args),
        engine_config=EngineConfig(**_given(args, "max_active", "max_queue")),
        sampling=_sampling(args),
        home=_home(args),
    )
    run_server(state)
    return 0


def export(args) -> int:
    from jarvis.export import ExportConfig
    from jarvis.export import export as run_export
    from jarvis.memory import Memory
    from jarvis.paths import user_path

    config = ExportConfig(
        format=args.format, output=user_path(args.output), **_given(args, "overwrite", "rated_only")
    )
    with Memory.open(_home(args)) as memory:
        n = run_export(memory, config)
    print(f"Wrote {n} {config.format} example(s) to {config.output}", file=sys.stderr)
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or (argv[0] not in SUBCOMMANDS and argv[0] not in ("-h", "--help", "--version")):
        argv.insert(0, "chat")
    args = parser().parse_args(argv)
    try:
        return {"chat": chat, "serve": serve, "export": export}[args.command](args)
    except ValueError as e:  # user input and config errors (PrimeError included): no traceback
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
