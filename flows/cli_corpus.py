"""`stemforge corpus demo|import`: build the embedded demo corpus or register real datasets in manifests.

Logging and the summary table go to stderr; machine-readable results go to files in --out (`corpus.json`,
`import_report.json`) next to `config.resolved.yaml`.
"""
from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import click

from engine.run_config import with_overrides
from flows.common import EXIT_DATA, EXIT_USAGE, config_options, fail, is_quiet, progress

log = logging.getLogger("stemforge.corpus")


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def corpus() -> None:
    """Generate the demo corpus or import real datasets into manifests."""


@corpus.command("demo")
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False), help="Output directory (new, or a previous demo corpus to replace).")
@click.option("--seed", type=click.IntRange(min=0), default=None, help="Seed for every random choice (default: run.seed).")
@click.option("--workers", type=click.IntRange(min=0), default=None,
              help="Units rendered at once as Ray tasks (default: corpus.demo.workers; 0 = as many as Ray has CPUs). "
                   "--set engine.backend=inprocess renders in this process (same bytes).")
@config_options
def demo(cfg: Any, out_dir: str, seed: int | None, workers: int | None) -> None:
    """Synthesise the labelled demo corpus: clean clips, natural-style scenes and their audit stems.

    Same seed and config give byte-identical audio files, whatever the executor or the number of workers.
    """
    from engine.data_steps import build_demo_corpus
    from engine.ray_tasks import executor_session
    from pipelines.corpus.demo import DemoCorpusError, count_jobs
    from storage.configio import config_hash, write_resolved

    cfg = with_overrides(cfg, {**({"run.seed": seed} if seed is not None else {}),
                               **({"corpus.demo.workers": workers} if workers is not None else {})})
    try:
        total = count_jobs(cfg.corpus.demo)
    except ValueError as exc:
        fail(str(exc), EXIT_USAGE)
    start = time.perf_counter()
    try:
        with executor_session(cfg) as executor, progress(total, "demo corpus") as advance:
            summary = build_demo_corpus(out_dir, cfg.corpus.demo, cfg.run.seed, cfg.audio.sample_rate,
                                        executor=executor, progress=advance,
                                        extra_summary={"config_hash": config_hash(cfg)})
    except DemoCorpusError as exc:
        fail(str(exc), EXIT_USAGE)
    write_resolved(cfg, out_dir)
    counts = summary["counts"]
    log.info("demo corpus in %s: %d clean clips (%.3f h), %d scenes (%.3f h), %d audit stems in %.1f s",
             Path(out_dir).resolve(), sum(counts["sources"].values()), summary["hours"]["sources"],
             sum(counts["scenes"].values()), summary["hours"]["scenes"], counts["audit_stems"], time.perf_counter() - start)


@corpus.command("import")
@click.option("--layout", required=True, type=click.Choice(["esc50", "fsd50k", "audioset", "folders", "stems"]), help="Dataset layout of --root.")
@click.option("--root", "root", required=True, type=click.Path(exists=True, file_okay=False), help="Dataset root directory.")
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False), help="Corpus directory receiving manifests and import_report.json.")
@click.option("--ontology", type=click.Path(exists=True, dir_okay=False), default=None,
              help="AudioSet ontology.json (default: ROOT/ontology.json, else the one shipped with stemforge).")
@click.option("--limit", type=click.IntRange(min=1), default=None, help="Import at most this many clips (trial run).")
@click.option("--seed", type=click.IntRange(min=0), default=None, help="Seed of the hash split for datasets without splits (default: run.seed).")
@config_options
def import_(cfg: Any, layout: str, root: str, out_dir: str, ontology: str | None, limit: int | None, seed: int | None) -> None:
    """Register a real dataset: validate every clip, dedupe by content, quarantine bad files.

    Single-label clips join the clean-source pool, multi-label clips the natural-scene pool. Audio is not
    copied; manifests point at the original files. Re-importing is idempotent. Exit code 3 when the layout is
    not found (the message names the folder or file it expected) or nothing usable was found.

    \b
    Layouts (ROOT = --root):
      esc50     ROOT/meta/esc50.csv + ROOT/audio/; fold 5 -> test, fold 4 -> val
      fsd50k    ROOT/ground_truth/dev.csv|eval.csv + ROOT/FSD50K.dev_audio|eval_audio/
      audioset  ROOT/*segments*.csv; audio ROOT/audio/<YTID>_<start>.wav
                (also <YTID>_<start>_<end>, <YTID>, optional "Y" prefix)
      folders   ROOT/<class>/... or ROOT/<train|val|test>/<class>/...
      stems     evaluation mixtures with ground-truth stems, one folder each:
                ROOT/<mixture>/mixture.<ext> (or mix.<ext>) plus one file per
                source: <label>.<ext> (MUSDB-style vocals.wav, drums.wav, ...)
                or stem_<label>.<ext>; optional ROOT/<train|val|test>/<mixture>/
                (else split corpus.importer.stems_split, default test). Checked:
                same rate and length; stems summing to the mixture within
                corpus.importer.stems_sum_min_db (30 dB residual SDR) -> "sum",
                else recorded "not_sum" (real recordings with bleed). Writes
                manifests/scenes + manifests/audit, as the demo corpus does.

    \b
    fsd50k and audioset remove parent labels (Dog when Bark is there) with the
    AudioSet ontology: --ontology, else ROOT/ontology.json, else the shipped
    copy. Labels are stored as slugs (alarm_clock) in `labels`, with display
    names in `label_names` and AudioSet MIDs in `label_mids`.
    """
    from pipelines.corpus.importers import LayoutError, import_reader
    from pipelines.corpus.layouts import open_layout
    from pipelines.corpus.ontology import OntologyError
    from storage.configio import write_resolved

    if seed is not None:
        cfg = with_overrides(cfg, {"run.seed": seed})
    icfg = cfg.corpus.importer
    try:
        reader = open_layout(layout, root, icfg, ontology, cfg.run.seed)
    except (LayoutError, OntologyError) as exc:
        fail(str(exc), EXIT_DATA)
    total = reader.total if limit is None or reader.total is None else min(limit, reader.total)
    with progress(total, f"import {layout}") as advance:
        report = import_reader(reader, out_dir, root=root, audio_cfg=cfg.audio, import_cfg=icfg, seed=cfg.run.seed,
                               limit=limit, progress=advance)
    write_resolved(cfg, out_dir)
    if not is_quiet():
        click.echo(report.table(), err=True)
    if report.imported == 0 and report.duplicate == 0:
        kinds = ", ".join(f"{k} {v}" for k, v in sorted(report.quarantined_by_kind.items()))
        fail(f"no usable clip found under {Path(root).resolve()} ({report.quarantined} quarantined: {kinds or 'none'}; "
             f"reasons per file in {Path(out_dir) / 'manifests' / 'quarantine'}, counts in {Path(out_dir) / 'import_report.json'})",
             EXIT_DATA)
