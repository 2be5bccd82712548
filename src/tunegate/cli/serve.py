"""`tunegate serve`: a local model (and adapter) behind an OpenAI-compatible API, until Ctrl-C."""

from __future__ import annotations

import time
from pathlib import Path

import typer

from tunegate.cli.common import console, quiet_libraries
from tunegate.errors import UserError
from tunegate.models import resolve_model


def serve(
    model: str = typer.Argument(
        ..., help="An embedded model (tiny-llama, smollm2-135m) or a local model directory."
    ),
    adapter: Path | None = typer.Option(
        None, "--adapter", help="A peft adapter directory (a trained arm) to apply to the model."
    ),
    host: str = typer.Option(
        "127.0.0.1", "--host", help="Interface to listen on (the default stays off the network)."
    ),
    port: int = typer.Option(8000, "--port", help="Port to listen on; 0 picks a free one."),
) -> None:
    """Serve a local model on an OpenAI-compatible HTTP API until Ctrl-C.

    GET /v1/models and /health; POST /v1/completions and /v1/chat/completions. One request
    generates at a time (CPU or one GPU, float32): for tests, demos and judging a trained arm
    through the same path as a hosted model, not for production traffic.
    """
    from tunegate.evaluate.server import ModelServer

    if not 0 <= port <= 65535:
        raise UserError(f"--port: {port} is not a port number (0 to 65535)")
    if adapter is not None and not (adapter / "adapter_config.json").is_file():
        raise UserError("not a peft adapter directory (no adapter_config.json)", where=str(adapter))
    model_dir = resolve_model(model)
    quiet_libraries()
    # The name as given is what clients send as `model` (vLLM's convention too).
    server = ModelServer(model_dir, adapter_dir=adapter, host=host, port=port, model_id=model)
    try:
        url = server.start()
    except OSError as err:  # the port is taken, the address is not this machine's, ...
        raise UserError(f"cannot listen on {host}:{port}: {err.strerror or err}") from None
    console.print(
        f"serving [bold]{model}[/]" + (f" + {adapter}" if adapter else "") + f" at {url}"
        " (Ctrl-C to stop)",
        highlight=False,
    )
    try:
        while True:
            time.sleep(3600)  # the server runs on its own thread; this one just waits for Ctrl-C
    except KeyboardInterrupt:
        console.print("stopped", highlight=False)
    finally:
        server.stop()
