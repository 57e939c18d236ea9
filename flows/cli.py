"""The `stemforge` command: command groups are imported lazily so `--help` stays fast and a heavy
dependency of one group (torch, ray, laion-clap) is never paid by another."""
from __future__ import annotations

import importlib
import sys

import click

# name -> (module:attribute, one-line help shown by `stemforge --help`)
COMMANDS: dict[str, tuple[str, str]] = {
    "corpus": ("flows.cli_corpus:corpus", "Generate the demo corpus or import real datasets into manifests."),
    "mix": ("flows.cli_mix:mix", "Render synthetic (mixture, target, residual, prompt) tuples into shards."),
    "shards": ("flows.cli_shards:shards", "Inspect and verify WebDataset shard stores."),
    "train": ("flows.cli:train", "Train the separator and the scorers (clap, judge, pc)."),
    "separate": ("flows.cli_separator:separate", "Separate one audio file with a text query."),
    "evaluate": ("flows.cli_separator:evaluate", "Evaluate a separator on test mixtures."),
    "score": ("flows.cli_score:score", "Score shards with a scorer and write a Parquet table."),
    "run": ("flows.cli_run:run", "Run the whole data engine end to end (default: the embedded demo)."),
    "pseudolabel": ("flows.cli_engine:pseudolabel", "Pseudo-label natural scenes with a separator (nothing dropped)."),
    "filter": ("flows.cli_engine:filter_", "Pseudo-label, score and filter natural scenes: candidates table + decisions."),
    "tiers": ("flows.cli_engine:tiers", "Write the kept candidates of a `stemforge filter` into ITT/SST shard stores."),
    "submit": ("flows.cli_jobs:submit", "Submit a stemforge command (e.g. run) as a job to a Ray cluster."),
    "jobs": ("flows.cli_jobs:jobs", "List, inspect, read the logs of and stop Ray jobs."),
    "deploy": ("flows.cli_flows:deploy", "Register a (scheduled) deployment of a stemforge flow on a Prefect server."),
    "serve": ("flows.cli_flows:serve", "Execute the runs of the stemforge deployments: the long-running service."),
    "flows": ("flows.cli_flows:flows_group", "List recent runs of the stemforge flows."),
    "review": ("flows.cli_review:review", "Build a run's static review page: listen to what each filter kept and dropped."),
}

TRAIN_COMMANDS: dict[str, tuple[str, str]] = {
    "separator": ("flows.cli_separator:train_separator", "Train the query-conditioned separator from shards."),
    "clap": ("flows.cli_clap:train_clap", "Train the in-project CLAP on a source manifest."),
    "judge": ("flows.cli_judge:train_judge", "Train the SAJ-style judge."),
    "judge-calibration": ("flows.cli_judge:calibrate_judge_cmd", "Re-calibrate a judge on a separator's own outputs."),
    "pc": ("flows.cli_judge:train_pc", "Train the production-complexity estimator."),
    "final": ("flows.cli_engine:train_final", "Train the final separator and judge of a finished run (its release)."),
}


def _resolve(target: str) -> click.Command:
    module_name, attr = target.split(":")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name != module_name:  # a dependency of the command is missing: keep the real traceback
            raise
        raise click.ClickException(f"this command is not available in this installation ({module_name} is missing)") from exc
    return getattr(module, attr)


class LazyGroup(click.Group):
    def __init__(self, *args, lazy: dict[str, tuple[str, str]], **kwargs):
        super().__init__(*args, **kwargs)
        self.lazy = lazy

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(set(super().list_commands(ctx)) | set(self.lazy))

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name in self.lazy:
            target, _ = self.lazy[name]
            if target == "flows.cli:train":
                return train
            return _resolve(target)
        return super().get_command(ctx, name)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        rows = [(name, self.lazy[name][1]) for name in sorted(self.lazy)]
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(rows)


@click.group(cls=LazyGroup, lazy=COMMANDS, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="stemforge")
def cli() -> None:
    """stemforge: manufacture training data for sound separation and retrain on it."""


@click.group(cls=LazyGroup, lazy=TRAIN_COMMANDS)
def train() -> None:
    """Train the separator and the learned scorers."""


def main(argv: list[str] | None = None) -> None:
    from storage.errors import DiskFullError

    try:
        cli.main(args=argv, prog_name="stemforge", standalone_mode=True)
    except KeyboardInterrupt:
        click.echo("interrupted", err=True)
        sys.exit(130)
    except DiskFullError as exc:  # ray.get raises RayTaskError(DiskFullError): print the task's own error
        cause = getattr(exc, "cause", None)
        click.echo(f"error: {cause if isinstance(cause, DiskFullError) else exc}", err=True)
        sys.exit(1)


if __name__ == "__main__":
    main()
