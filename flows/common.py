"""Shared CLI plumbing: config options, logging to stderr, progress bars, exit codes.

Exit codes are part of the interface (scripts branch on them):
0 success, 1 runtime failure, 2 usage or configuration error, 3 input data unusable, 4 the presence gate silenced
the query (`stemforge separate`: the file written is silence; `--no-gate` returns the mask output).
"""
from __future__ import annotations

import functools
import logging
import os
import sys
from contextlib import contextmanager
from typing import Any, Callable, Iterable, Iterator, TypeVar

import click

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_DATA = 3
EXIT_GATED = 4

log = logging.getLogger("stemforge")
F = TypeVar("F", bound=Callable[..., Any])


def setup_logging(quiet: bool = False, verbose: int = 0) -> None:
    level = logging.WARNING if quiet else (logging.DEBUG if verbose else logging.INFO)
    root = logging.getLogger()
    for handler in list(root.handlers):
        if getattr(handler, "_stemforge", False):
            root.removeHandler(handler)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s", "%H:%M:%S"))
    handler._stemforge = True  # type: ignore[attr-defined]
    root.addHandler(handler)
    root.setLevel(level)
    logging.getLogger("stemforge").setLevel(level)
    # one line per HTTP request to Prefect's API drowns the run's own log; -vv shows them
    logging.getLogger("httpx").setLevel(logging.DEBUG if verbose > 1 else logging.WARNING)


def config_options(func: F) -> F:
    """`--config`, `--set`, `--quiet`, `-v` on every command; loads the typed config into `cfg`."""

    @click.option("--config", "config_path", type=click.Path(dir_okay=False), default=None, help="YAML preset (default: configs/demo.yaml).")
    @click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE", help="Dotted override, e.g. --set mixing.snr_db=[-3,10]. Repeatable.")
    @click.option("--quiet", "-q", is_flag=True, help="Only warnings and errors on stderr; no progress bars.")
    @click.option("--verbose", "-v", count=True, help="Debug logging.")
    @functools.wraps(func)
    def wrapper(*args: Any, config_path: str | None, overrides: tuple[str, ...], quiet: bool, verbose: int, **kwargs: Any) -> Any:
        from engine.run_config import load
        from storage.configio import ConfigError

        setup_logging(quiet, verbose)
        os.environ["STEMFORGE_QUIET"] = "1" if quiet else "0"
        try:
            cfg = load(config_path, overrides)
        except ConfigError as exc:
            click.echo(f"error: {exc}", err=True)
            sys.exit(EXIT_USAGE)
        return func(*args, cfg=cfg, **kwargs)

    return wrapper  # type: ignore[return-value]


def is_quiet() -> bool:
    return os.environ.get("STEMFORGE_QUIET") == "1"


@contextmanager
def progress(total: int | None, description: str) -> Iterator[Callable[[int], None]]:
    """A rich progress bar on stderr, hidden with --quiet (rich already degrades to plain lines off a terminal)."""
    if is_quiet():
        yield lambda n=1: None
        return
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    console = Console(stderr=True)
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), TimeRemainingColumn(), console=console, transient=False) as bar:
        task = bar.add_task(description, total=total)
        yield lambda n=1: bar.advance(task, n)


T = TypeVar("T")


def track(items: Iterable[T], total: int | None, description: str) -> Iterator[T]:
    with progress(total, description) as advance:
        for item in items:
            yield item
            advance(1)


def fail(message: str, code: int = EXIT_FAILURE) -> None:
    click.echo(f"error: {message}", err=True)
    sys.exit(code)
