"""`bertx serve`: the HTTP server over one artifact or several."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from bertx.batching import DEFAULT_BATCH_TOKENS
from bertx.errors import BertxError, OptionError
from bertx.loading import LoadOptions
from bertx.session import Device

from .common import VARIANT_HELP, VariantChoice, app, err


@app.command()
def serve(
    artifacts: Annotated[
        list[str],
        typer.Argument(
            metavar="ARTIFACT...",
            help="Artifact folders written by `bertx export`; NAME=FOLDER names a model [its source id].",
        ),
    ],
    variant: Annotated[VariantChoice, typer.Option(help=VARIANT_HELP)] = VariantChoice.FP32,
    device: Annotated[
        Device | None, typer.Option(help="cpu, cuda, tensorrt, openvino, auto [the variant's engine].")
    ] = None,
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=0, max=65535, help="Port to listen on.")] = 8080,
    api_key_file: Annotated[
        Path | None, typer.Option(help="File holding the API key clients send as `Authorization: Bearer KEY`.")
    ] = None,
    max_batch_tokens: Annotated[
        int, typer.Option(min=1, help="Tokens one batching round of concurrent requests holds.")
    ] = 8192,
    max_wait_ms: Annotated[
        float, typer.Option(min=0, max=1000, help="Wait for more requests in a round (0: run what is queued).")
    ] = 0.0,
    max_queue_tokens: Annotated[
        int, typer.Option(min=1, help="Tokens that may wait; beyond, requests get 503 with Retry-After.")
    ] = 262_144,
    max_inputs: Annotated[int, typer.Option(min=1, help="Most texts per request.")] = 2048,
    max_body_mb: Annotated[float, typer.Option(min=0.001, help="Largest request body, in MiB.")] = 8.0,
    max_request_chars: Annotated[
        int, typer.Option(min=1, help="Most characters a request's texts may hold, a prompt before each counted.")
    ] = 8 * 1024 * 1024,
    read_timeout: Annotated[
        float, typer.Option(min=0.001, help="Seconds to wait for the rest of a request body (408 beyond).")
    ] = 30.0,
    batch_tokens: Annotated[
        int, typer.Option(min=0, help="Padded tokens per inference call inside a round; 0 batches by count only.")
    ] = DEFAULT_BATCH_TOKENS,
    threads: Annotated[int | None, typer.Option(min=1, help="Inference threads [what the process may use].")] = None,
    model_name: Annotated[
        str | None, typer.Option(help="Name of a single model, which responses carry [the artifact's source id].")
    ] = None,
    verify: Annotated[bool, typer.Option("--verify/--no-verify", help="Check the model files' sha256 first.")] = True,
    log_level: Annotated[str, typer.Option(help="uvicorn's log level.")] = "info",
) -> None:
    """Serve embeddings over HTTP: OpenAI's /v1/embeddings, /v1/models, /v1/rerank; text-embeddings-inference's
    /embed (with any layers), /embed_all, /rerank, /predict, /tokenize, /decode; /embed/tokens, /embed/words,
    /health, /ready, /info, /metrics. Concurrent requests to a model are batched together; with several models,
    a request's `model` picks one. Needs `bertx[serve]`."""
    try:
        _serve(**locals())
    except BertxError as exc:  # not through _user_errors: a server runs for days, its warnings are logged
        err.print(f"[bold red]error:[/] {escape(str(exc))}", highlight=False)
        raise typer.Exit(2) from None


def _serve(
    artifacts: list[str],
    variant: VariantChoice,
    device: Device | None,
    host: str,
    port: int,
    api_key_file: Path | None,
    max_batch_tokens: int,
    max_wait_ms: float,
    max_queue_tokens: int,
    max_inputs: int,
    max_body_mb: float,
    max_request_chars: int,
    read_timeout: float,
    batch_tokens: int,
    threads: int | None,
    model_name: str | None,
    verify: bool,
    log_level: str,
) -> None:
    from bertx.serving import BatchSettings, ServerSettings
    from bertx.serving.server import read_api_key, require_extra
    from bertx.serving.server import serve as run_server

    require_extra()
    settings = ServerSettings(
        batch=BatchSettings(max_batch_tokens, max_wait_ms, max_queue_tokens),
        max_inputs=max_inputs,
        max_body_bytes=int(max_body_mb * 1024 * 1024),
        max_request_chars=max_request_chars,
        read_timeout_s=read_timeout,
        api_key=read_api_key(api_key_file) if api_key_file is not None else None,
        model_name=model_name,
    )
    load = LoadOptions(variant.value, device, threads, batch_tokens=batch_tokens, verify=verify)
    run_server([_named(item) for item in artifacts], load, host=host, port=port, settings=settings, log_level=log_level)


def _named(item: str) -> Path | tuple[str, Path]:
    """FOLDER, or NAME=FOLDER (unless a folder by that whole name exists)."""
    name, sep, folder = item.partition("=")
    if not sep or Path(item).exists():
        return Path(item)
    if not name.strip() or not folder:
        raise OptionError(f"{item!r}: write a named model as NAME=FOLDER")
    return name, Path(folder)
