"""`stemforge review RUN_DIR [--open] [--per-filter N]`: build or rebuild a run's static review page.

Works on any run directory with at least one finished filter step (finished runs, runs stopped with `--until`,
runs from older versions): everything is read from the files the run wrote (engine/review/). `--open` opens the
page in the default browser (`webbrowser`; the page needs no server).
"""
from __future__ import annotations

import logging
import sys
from pathlib import Path

import click

from flows.common import EXIT_DATA, EXIT_USAGE, setup_logging

log = logging.getLogger("stemforge.review")


@click.command("review")
@click.argument("run_dir", type=click.Path(file_okay=False, path_type=Path))
@click.option("--per-filter", type=click.IntRange(min=0), default=None,
              help="Kept and dropped candidates with players per filter and iteration (each side; default 3).")
@click.option("--seed", type=int, default=0, show_default=True, help="Picks the sampled candidates near each threshold.")
@click.option("--excerpt-s", type=click.FloatRange(min=0.5), default=None, help="Excerpt length in seconds (default 4).")
@click.option("--max-rows", type=click.IntRange(min=1), default=None,
              help="Candidate-table rows embedded per iteration (default 20000; beyond: a seeded sample).")
@click.option("--format", "audio_format", type=click.Choice(["wav", "flac"]), default="wav", show_default=True,
              help="Excerpt format: WAV plays in every browser, FLAC is about half the size.")
@click.option("--open", "open_page", is_flag=True, help="Open the page in the default browser.")
@click.option("--quiet", "-q", is_flag=True, help="Only warnings and errors on stderr.")
@click.option("--verbose", "-v", count=True, help="Debug logging.")
def review(run_dir: Path, per_filter: int | None, seed: int, excerpt_s: float | None, max_rows: int | None,
           audio_format: str, open_page: bool, quiet: bool, verbose: int) -> None:
    """Build RUN_DIR/review/index.html: listen to what each filter kept and dropped near its threshold."""
    from engine.review import ReviewError, build_review
    from engine.review.build import DEFAULT_EXCERPT_S, DEFAULT_MAX_ROWS, DEFAULT_PER_FILTER

    setup_logging(quiet, verbose)
    if not run_dir.is_dir():
        click.echo(f"error: {run_dir}: no such run directory", err=True)
        sys.exit(EXIT_USAGE)
    try:
        page = build_review(run_dir, per_filter=DEFAULT_PER_FILTER if per_filter is None else per_filter, seed=seed,
                            excerpt_s=excerpt_s or DEFAULT_EXCERPT_S, max_rows=max_rows or DEFAULT_MAX_ROWS,
                            audio_format=audio_format)
    except ReviewError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(EXIT_DATA)
    click.echo(str(page))
    if open_page:
        import webbrowser

        if not webbrowser.open(page.resolve().as_uri()):
            log.warning("no browser found to open %s", page)
