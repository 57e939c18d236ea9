"""`stemforge run`: the whole data engine as one Prefect flow (flows/cycle.py `stemforge_run`): the dataset build,
then the train-and-relabel cycle until its stop rule ends it.

Prefect runs ephemerally (a temporary local API, no server to start) unless PREFECT_API_URL points at a server,
where the run then shows up with its sub-flows, tasks and artifacts. Resumes by default: a re-run of the same
`--name` skips finished steps (done-markers under runs/<name>/steps/, with or without Prefect's database).
`--restart` wipes the run directory first. The report lands in runs/<name>/report.json and report.md.
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
              help="Stop after this step (corpus, synthetic, separator_0, filter_0, separator_K); a later run without "
                   "it continues.")
@config_options
def run(cfg: Any, out_root: str | None, name: str | None, restart: bool, until: str | None) -> None:
    """Run the data engine: corpus, synthetic shards, scorers, separator, then relabel iterations until they stop
    paying, then the final separator and judge (engine.final; release in <out>/<name>/final/)."""
    from engine.workspace import RunError
    from flows.cycle import stemforge_run
    from storage.audio import AudioError
    from storage.configio import ConfigError

    try:
        report = stemforge_run(config=cfg.model_dump(mode="json"), out_root=out_root, name=name, restart=restart,
                               until=until)
    except (RunError, ConfigError) as exc:
        fail(str(exc), EXIT_USAGE)
    except AudioError as exc:
        fail(str(exc), EXIT_DATA)
    if "stopped_after" in report:
        click.echo(json.dumps({"stopped_after": report["stopped_after"], "resumed_steps": report.get("resumed_steps"),
                               "timings": {k: round(v, 2) for k, v in report["timings"].items()},
                               "ray": report.get("ray")}))
        return
    for r in report["iterations"]:
        click.echo(json.dumps({k: r.get(k) for k in ("iteration", "sdri_db", "si_sdri_db", "natural_sdri_db",
                                                     "control_natural_sdri_db", "val_natural_sdri_db", "silence_sdr_db",
                                                     "candidates", "kept_itt", "kept_sst", "prop_re_sdr_gt15")}))
    click.echo(f"stopped: {report['headline']['stopped']['reason']}")
    click.echo(f"report: {report['files']['md']}")
    if report["files"].get("review"):
        click.echo(f"review: {report['files']['review']}")
    if report.get("final"):
        final = report["final"]
        click.echo(json.dumps({"final": final["evaluation"], "judge_targets": final["judge_targets"]}))
        click.echo(f"release: {final['dir']}")
