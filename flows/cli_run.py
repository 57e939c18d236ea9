"""`stemforge run`: the whole data engine end to end (default: the embedded demo preset).

Resumes by default: a re-run of the same `--name` skips finished steps (done-markers under runs/<name>/steps/).
`--restart` wipes the run directory first. Progress and step timings go to stderr; the report lands in
runs/<name>/report.json and report.md.
"""
from __future__ import annotations

import json
from typing import Any

import click

from flows.common import EXIT_DATA, EXIT_USAGE, config_options, fail


@click.command("run")
@click.option("--out", "out_root", type=click.Path(file_okay=False), default=None, help="Runs folder (default: run.out_root, 'runs').")
@click.option("--name", default=None, help="Run name (default: run.name); the run lives in <out>/<name>/.")
@click.option("--restart", is_flag=True, help="Delete the run directory and start from scratch instead of resuming.")
@click.option("--until", default=None, metavar="STEP",
              help="Stop after this step (corpus, synthetic, separator_0, scorer_clap, scorer_judge, scorer_pc, filter_K, "
                   "tiers_K, separator_K, evaluate_K); a later run without it continues.")
@config_options
def run(cfg: Any, out_root: str | None, name: str | None, restart: bool, until: str | None) -> None:
    """Run the data engine: corpus, synthetic shards, separator, scorers, pseudo-labels, filters, tiers, retrain, report."""
    from engine.run import run_job
    from engine.workspace import RunError
    from storage.audio import AudioError

    try:
        report = run_job(cfg, out_root=out_root, name=name, restart=restart,
                         on_step=lambda s: click.echo(f"[stemforge run] step {s}", err=True), until=until)
    except RunError as exc:
        fail(str(exc), EXIT_USAGE)
    except AudioError as exc:
        fail(str(exc), EXIT_DATA)
    if "stopped_after" in report:
        click.echo(json.dumps({"stopped_after": report["stopped_after"], "resumed_steps": report["resumed_steps"],
                               "timings": {k: round(v, 2) for k, v in report["timings"].items()},
                               "ray": report.get("ray")}))
        return
    rows = report["iterations"]
    for r in rows:
        click.echo(json.dumps({k: r.get(k) for k in ("iteration", "sdri_db", "si_sdri_db", "natural_sdri_db", "silence_sdr_db",
                                                     "candidates", "kept_itt", "kept_sst", "re_sdr_mean_db", "prop_re_sdr_gt15")}))
    click.echo(f"report: {report['files']['md']}")
