"""`stemforge shards inspect|verify`: look into a WebDataset shard store.

The human-readable table goes to stdout, logs to stderr, and `--json-out` writes the full machine-readable result
(atomically). Exit codes: 0 fine, 3 when the directory holds no shards or `verify` found damage.
"""
from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import click

from flows.common import EXIT_DATA, config_options, fail, progress

log = logging.getLogger("stemforge.shards")


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def shards() -> None:
    """Inspect and verify WebDataset shard stores."""


def _write_json(path: str | None, payload: dict[str, Any]) -> None:
    if path:
        from storage.atomic import atomic_write_text

        atomic_write_text(path, json.dumps(payload, indent=1, sort_keys=True, default=str) + "\n")
        log.info("wrote %s", Path(path).resolve())


def _console():  # type: ignore[no-untyped-def]
    from rich.console import Console

    return Console(soft_wrap=False, width=120)


def _hist_table(title: str, hist: dict[str, int], total: int, limit: int = 20):  # type: ignore[no-untyped-def]
    from rich.table import Table

    table = Table(title=title, title_justify="left")
    table.add_column("value")
    table.add_column("count", justify="right")
    table.add_column("share", justify="right")
    for value, count in list(hist.items())[:limit]:
        table.add_row(value, str(count), f"{100.0 * count / max(total, 1):.1f}%")
    if len(hist) > limit:
        table.add_row(f"... {len(hist) - limit} more", "", "")
    return table


@shards.command("inspect")
@click.argument("store", type=click.Path(exists=True, file_okay=False))
@click.option("--json-out", type=click.Path(dir_okay=False), default=None, help="Write the full summary as JSON here.")
@click.option("--samples", "num_samples", type=click.IntRange(min=0), default=3, show_default=True,
              help="How many samples' JSON records to show.")
@config_options
def inspect_(cfg: Any, store: str, json_out: str | None, num_samples: int) -> None:
    """Counts, hours, label histogram, recipes and a few samples' JSON of a shard store (from its index)."""
    from rich.table import Table

    from storage.shards.inspect import summarize_store
    from storage.shards.reader import ShardReadError

    try:
        summary = summarize_store(store, samples=num_samples)
    except (FileNotFoundError, ShardReadError) as exc:
        fail(str(exc), EXIT_DATA)
    _write_json(json_out, summary)
    console = _console()
    head = Table(title=f"shard store {summary['store']}", title_justify="left", show_header=False)
    head.add_column("field")
    head.add_column("value", justify="right")
    head.add_row("complete (_SUCCESS)", "yes" if summary["complete"] else "NO")
    head.add_row("summarised from", summary["source"])
    head.add_row("shards", str(summary["num_shards"]))
    head.add_row("samples", str(summary["num_samples"]))
    head.add_row("hours", f"{summary['hours']:.4f}")
    if summary["mean_duration_s"] is not None:
        head.add_row("mean duration (s)", f"{summary['mean_duration_s']:.2f}")
    console.print(head)
    total = summary["num_samples"]
    console.print(_hist_table("labels", summary["labels"], total))
    console.print(_hist_table("recipes", summary["recipes"], total))
    console.print(_hist_table("operators", summary["operators"], total))
    for record in summary["samples"]:
        console.print_json(json.dumps(record, default=str), indent=None)


@shards.command("verify")
@click.argument("store", type=click.Path(exists=True, file_okay=False))
@click.option("--json-out", type=click.Path(dir_okay=False), default=None, help="Write the report as JSON here.")
@config_options
def verify(cfg: Any, store: str, json_out: str | None) -> None:
    """Read and decode every member of every shard and cross-check the index; exit 3 if anything is damaged."""
    from rich.table import Table

    from storage.shards.inspect import verify_store
    from storage.shards.reader import list_shards

    try:
        total = len(list_shards(store))
        with progress(total, "verify shards") as advance:
            report = verify_store(store, progress=advance)
    except FileNotFoundError as exc:
        fail(str(exc), EXIT_DATA)
    _write_json(json_out, report)
    console = _console()
    console.print(f"{report['num_shards']} shard(s), {report['samples_ok']} healthy sample(s), "
                  f"{report['members_ok']} member(s) decoded, index checked: {report['index_checked']}")
    if report["problems"]:
        table = Table(title=f"{len(report['problems'])} problem(s)", title_justify="left")
        for col in ("shard", "member", "problem"):
            table.add_column(col, overflow="fold")
        for p in report["problems"]:
            table.add_row(p["shard"], p["member"], p["problem"])
        console.print(table)
        fail(f"{store}: {len(report['problems'])} damaged shard(s)/member(s)", EXIT_DATA)
    console.print("all shards healthy")
