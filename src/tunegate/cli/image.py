"""`tunegate image build`: the training image, offline, here or on the tower. Parse, call, print."""

from __future__ import annotations

from pathlib import Path

import typer

from tunegate.cli.common import console

image_app = typer.Typer(help="The training container's image.", no_args_is_help=True)


@image_app.command()
def build(
    plan_path: Path | None = typer.Option(
        None, "--plan", help="Take the host, ssh config and image name from a tunegate.yaml."
    ),
    host: str | None = typer.Option(
        None, "--host", help="Build on this engine's machine, ssh://[user@]host[:port]."
    ),
    ssh_config: Path | None = typer.Option(None, "--ssh-config", help="An ssh config for --host."),
    tag: str | None = typer.Option(None, "--tag", help="The image's name (default: the plan's)."),
    base: str | None = typer.Option(
        None,
        "--base",
        help="Any image with python3 and venv (default: a CUDA 12.8 runtime with cuDNN).",
    ),
    find_links: list[str] = typer.Option(
        [], "--find-links", help="Where pip also finds wheels (a directory; repeatable)."
    ),
    pin: list[str] = typer.Option(
        [],
        "--pin",
        help="NAME==VERSION replacing this environment's pin, e.g. a CUDA build of torch "
        "(repeatable).",
    ),
    house: Path | None = typer.Option(
        None, "--wheelhouse", help="The dependencies' wheels from a wheelhouse made before."
    ),
) -> None:
    """Build the training image without a network: the project's wheel and its dependencies at
    this environment's versions (downloaded once, at set-up), `docker build --network=none`."""
    from tunegate.models.tiny import cache_dir
    from tunegate.plan import ExecutorConfig, load_plan
    from tunegate.remote.host import Host
    from tunegate.remote.image import DEFAULT_BASE
    from tunegate.remote.image import build as build_image

    executor = load_plan(plan_path).executor if plan_path else ExecutorConfig()
    url = host or executor.host
    config = ssh_config or executor.ssh_config
    target = Host.parse(url, config, where="--host") if url else None
    built = build_image(
        tag=tag or executor.image,
        base=base or DEFAULT_BASE,
        host=target,
        cache=cache_dir(),
        find_links=find_links,
        overrides=pin,
        say=lambda line: console.print(line, highlight=False, soft_wrap=True),
        house=house,
    )
    console.print(
        f"built {built.tag} on {built.where} in {built.seconds:.0f} s ({built.wheels} wheels)",
        highlight=False,
    )


@image_app.command()
def wheelhouse(
    find_links: list[str] = typer.Option(
        [], "--find-links", help="Where pip also finds wheels (a directory; repeatable)."
    ),
    pin: list[str] = typer.Option([], "--pin", help="NAME==VERSION replacing a pin (repeatable)."),
) -> None:
    """Download the image's dependencies once (a set-up step: it reads the package index), so
    that `tunegate image build` then needs no network."""
    import tempfile

    from tunegate.models.tiny import cache_dir
    from tunegate.remote.image import project_wheel
    from tunegate.remote.image import wheelhouse as make_wheelhouse

    def say(line: str) -> None:
        console.print(line, highlight=False, soft_wrap=True)

    with tempfile.TemporaryDirectory(prefix="tunegate-wheel-") as tmp:
        project = project_wheel(Path(tmp))
        house = make_wheelhouse(cache_dir(), project, find_links=find_links, overrides=pin, say=say)
    console.print(f"wheelhouse: {house}", highlight=False, soft_wrap=True)
