"""End to end through the CLI: train `tiny` for a few steps from real shards, separate a file, evaluate."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from click.testing import CliRunner

from flows.cli import cli
from separator_data import clearly_different, same_output, synthetic_samples, untrained_checkpoint, write_samples
from storage.audio import load_audio, write_audio

SMALL = ["--set", "separator.width=48", "--set", "separator.segment_s=1.0", "--set", "separator.batch_size=4",
         "--set", "separator.steps_per_epoch=3", "--set", "separator.max_steps=6", "--set", "separator.threads=1"]


def _invoke(args: list[str]):
    return CliRunner().invoke(cli, args, catch_exceptions=False)


def test_train_separate_evaluate(tmp_path: Path) -> None:
    torch.set_num_threads(1)
    train_dir, test_dir = tmp_path / "train", tmp_path / "test"
    write_samples(train_dir, list(synthetic_samples(30, seconds=1.5, seed=1, silent_every=5)))
    write_samples(test_dir, list(synthetic_samples(6, seconds=1.5, seed=9)))
    ckpt = tmp_path / "sep.pt"

    res = _invoke(["train", "separator", "--shards", str(train_dir), "--out", str(ckpt), "-q", *SMALL])
    assert res.exit_code == 0, res.output
    summary = json.loads(res.output.strip().splitlines()[-1])
    assert summary["epochs"] == 2 and summary["steps"] == 6 and ckpt.is_file()

    # one file longer than the training window: windowed inference must return the same length
    mix = next(iter(synthetic_samples(1, seconds=3.3, seed=4)))["mix"]
    wav_in, wav_out, resid = tmp_path / "in.wav", tmp_path / "out.flac", tmp_path / "res.flac"
    write_audio(wav_in, mix, 16000)
    res = _invoke(["separate", "--separator", str(ckpt), "--audio", str(wav_in), "--query", "whistle",
                   "--negative", "hiss", "--gate-threshold", "0", "--out", str(wav_out), "--residual", str(resid), "-q"])
    assert res.exit_code == 0, res.output
    out = load_audio(wav_out)
    assert np.abs(out).max() > 1e-4  # gate off: the mask output itself, not silence
    assert out.shape == mix.shape and np.isfinite(out).all()
    assert np.allclose(out + load_audio(resid), mix, atol=1e-4)

    report_path = tmp_path / "report.json"
    res = _invoke(["evaluate", "--separator", str(ckpt), "--test", str(test_dir), "--json", str(report_path), "-q"])
    assert res.exit_code == 0, res.output
    assert "OVERALL" in res.output and "absent-class queries" in res.output and "95% CI" in res.output
    report = json.loads(report_path.read_text())
    assert report["natural"] is None
    syn = report["synthetic"]
    assert syn["overall"]["n"] == 6 and syn["absent_queries"]["n"] == 6
    assert np.isfinite(syn["overall"]["si_sdri"]) and set(syn["per_class"]) <= {
        "low hum", "whistle", "hiss", "rumble", "ticking clock", "bird chirp"}
    lo, hi = syn["overall"]["sdri_ci95"]
    assert lo <= syn["overall"]["sdri"] <= hi and 0.0 <= syn["overall"]["silent_share"] <= 1.0


def test_run_evaluation_and_cli_evaluate_are_one_code_path(tmp_path: Path) -> None:
    """The run's per-iteration evaluation and `stemforge evaluate` give the same figures on the same checkpoint,
    synthetic tuples and natural scenes (the disagreement that motivated one evaluator)."""
    from engine.evaluation import evaluate_checkpoint, summarize
    from engine.run_config import load
    from pipelines.corpus.config import DemoConfig
    from pipelines.corpus.demo import generate_demo
    from pipelines.mixing.prompts import phrase_for

    torch.set_num_threads(1)
    corpus = tmp_path / "corpus"
    generate_demo(corpus, DemoConfig(classes=["male speech", "piano", "drums", "dog", "siren"], source_seconds=1.0,
                                     scene_seconds=2.0, event_seconds=(0.8, 1.2), events_per_scene=(2, 3), workers=1,
                                     sources_per_class={"train": 1, "val": 1, "test": 1},
                                     scenes={"train": 1, "val": 1, "test": 3}), seed=0, sample_rate=16000)
    shards = write_samples(tmp_path / "syn", list(synthetic_samples(6, seconds=0.5, seed=2, silent_every=3)))
    ckpt = untrained_checkpoint(tmp_path / "u.pt")
    sets = ["engine.device=cpu", "engine.eval_max_items=4", "engine.natural_eval_split=test"]

    run_figures = evaluate_checkpoint(str(ckpt), load(None, sets), {"scenes": str(corpus / "manifests" / "scenes"),
                                                                    "audit": str(corpus / "manifests" / "audit")}, str(shards))
    out = tmp_path / "eval.json"
    res = _invoke(["evaluate", "--separator", str(ckpt), "--test", str(corpus), "--test", str(shards), "--split", "test",
                   "--max-items", "4", "--device", "cpu", "--json", str(out), "-q", *[a for s in sets for a in ("--set", s)]])
    assert res.exit_code == 0, res.output
    assert "natural scenes, split test" in res.output and "synthetic tuples" in res.output
    cli = json.loads(out.read_text())
    assert summarize(cli) == run_figures
    assert run_figures["natural_items"] >= 6 and run_figures["synthetic_items"] == 3  # 4 tuples, one silent target
    assert run_figures["natural_sdri_ci95_db"] is not None and run_figures["natural_silent_baseline_sdri_db"] is not None
    assert set(run_figures["natural_per_class"]) <= {"male speech", "piano", "drums", "dog", "siren"}
    # the documented policy: phrase positive, the scene's other labels as negatives (checked through the item keys)
    from engine.evaluation import natural_items

    items = list(natural_items(str(corpus / "manifests" / "scenes"), str(corpus / "manifests" / "audit"), "test", 16000))
    assert len(items) == run_figures["natural_items"]
    for it in items:
        label = it.key.split("/", 1)[1]
        assert it.positive == phrase_for(label) and it.classes == (label,)
        assert it.negative is None or phrase_for(label) not in it.negative.split(", ")


def test_cli_errors_are_clear(tmp_path: Path) -> None:
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    wav = tmp_path / "x.wav"
    write_audio(wav, np.zeros(16000, np.float32) + 0.01, 16000)
    res = CliRunner().invoke(cli, ["separate", "--separator", str(bad), "--audio", str(wav), "--query", "x", "--out", str(tmp_path / "o.wav")])
    assert res.exit_code == 2 and "bad.pt" in res.output
    empty = tmp_path / "empty"
    empty.mkdir()
    res = CliRunner().invoke(cli, ["train", "separator", "--shards", str(empty), "--out", str(tmp_path / "c.pt"), *SMALL])
    assert res.exit_code == 3 and "no shard index" in res.output


def test_separate_says_when_the_presence_gate_silenced_the_query(tmp_path: Path) -> None:
    """A closed gate is no longer a silent file and a number: stderr names the query, presence and threshold and
    the exit code is EXIT_GATED; --no-gate returns the mask output; both flags at once are a usage error."""
    from flows.common import EXIT_GATED
    from storage.audio import AudioConfig

    ckpt = untrained_checkpoint(tmp_path / "u.pt")
    wav, out = tmp_path / "in.wav", tmp_path / "out.wav"
    write_audio(wav, next(iter(synthetic_samples(1, seconds=1.2, seed=4)))["mix"], 16000)
    base = ["separate", "--separator", str(ckpt), "--audio", str(wav), "--out", str(out), "--device", "cpu", "-q"]
    res = CliRunner().invoke(cli, [*base, "--query", "violin", "--gate-threshold", "1.0"])
    assert res.exit_code == EXIT_GATED == 4, res.output
    assert "presence gate silenced query 'violin' (asked as 'a violin playing')" in res.stderr
    assert "threshold 1.00" in res.stderr and "--no-gate" in res.stderr
    info = json.loads(res.stdout.strip().splitlines()[-1])
    assert info["gated_share"] == 1.0 and f"presence {info['presence']:.3f}" in res.stderr
    assert out.is_file() and not np.any(load_audio(out, AudioConfig(allow_silent=True)))
    res = CliRunner().invoke(cli, [*base, "--query", "violin", "--no-gate"])
    assert res.exit_code == 0 and "warning" not in res.stderr, res.output
    assert json.loads(res.stdout.strip().splitlines()[-1])["gate_threshold"] == 0.0 and np.any(load_audio(out))
    res = CliRunner().invoke(cli, [*base, "--query", "violin", "--no-gate", "--gate-threshold", "0.3"])
    assert res.exit_code == 2 and "not both" in res.output


def test_separate_asks_a_label_the_same_way_in_any_written_form(tmp_path: Path) -> None:
    ckpt = untrained_checkpoint(tmp_path / "u.pt", query_sensitive=True)
    wav = tmp_path / "in.wav"
    write_audio(wav, next(iter(synthetic_samples(1, seconds=1.2, seed=4)))["mix"], 16000)
    texts, outs = [], []
    for i, form in enumerate(["alarm_clock", "Alarm clock", "ALARM CLOCK", "Alarm_Clock", "alarm-clock", "dog bark"]):
        out = tmp_path / f"o{i}.wav"
        res = _invoke(["separate", "--separator", str(ckpt), "--audio", str(wav), "--query", form, "--no-gate",
                       "--out", str(out), "--device", "cpu", "-q"])
        assert res.exit_code == 0, res.output
        texts.append(json.loads(res.stdout.strip().splitlines()[-1])["query_text"])
        outs.append(load_audio(out))
    assert set(texts[:-1]) == {"alarm clock"} and texts[-1] != "alarm clock"
    # the same query gives the same output up to float rounding; another query gives a clearly different one
    assert all(same_output(o, outs[0]) for o in outs[1:-1])
    assert clearly_different(outs[-1], outs[0])


def test_evaluate_names_what_it_expected(tmp_path: Path) -> None:
    """A sources-only import has no scenes; scenes without audit stems have no ground truth; a stem file listed in
    the audit manifest but missing on disk is named with its scene: each a clear error with EXIT_DATA."""
    from pipelines.corpus.config import DemoConfig
    from pipelines.corpus.demo import generate_demo
    from storage.manifests import iter_rows

    ckpt = untrained_checkpoint(tmp_path / "u.pt")
    root = tmp_path / "clips"
    for c in ("dog", "siren"):
        (root / c).mkdir(parents=True)
        for i in range(2):
            write_audio(root / c / f"{i}.wav", 0.1 * np.random.default_rng(i).standard_normal(16000).astype(np.float32), 16000)
    imported = tmp_path / "imported"
    assert _invoke(["corpus", "import", "--layout", "folders", "--root", str(root), "--out", str(imported), "-q"]).exit_code == 0
    ev = ["evaluate", "--separator", str(ckpt), "--device", "cpu", "-q", "--test"]
    res = CliRunner().invoke(cli, [*ev, str(imported)])
    assert res.exit_code == 3 and f"{imported / 'manifests' / 'scenes'}/" in res.stderr
    assert "sources-only import" in res.stderr and "Traceback" not in res.output
    res = CliRunner().invoke(cli, [*ev, str(imported / "manifests" / "sources")])
    assert res.exit_code == 3 and "found a source_clip manifest" in res.stderr

    corpus = tmp_path / "corpus"
    generate_demo(corpus, DemoConfig(classes=["dog", "siren", "piano"], source_seconds=1.0, scene_seconds=1.5,
                                     event_seconds=(0.8, 1.0), events_per_scene=(2, 2), workers=1,
                                     sources_per_class={"train": 1, "val": 1, "test": 1},
                                     scenes={"train": 1, "val": 1, "test": 1}), seed=0, sample_rate=16000)
    stem = next(r for r in iter_rows(corpus / "manifests" / "audit", expect="audit_stem")
                if r["scene_id"].startswith("demo-scene-test"))
    Path(stem["path"]).unlink()
    res = CliRunner().invoke(cli, [*ev, str(corpus)])
    assert res.exit_code == 3 and "Traceback" not in res.output
    assert f"{stem['path']}: stem file of scene {stem['scene_id']!r}" in res.stderr and "does not exist" in res.stderr
    import shutil

    shutil.rmtree(corpus / "manifests" / "audit")
    res = CliRunner().invoke(cli, [*ev, str(corpus)])
    assert res.exit_code == 3 and f"{corpus / 'manifests' / 'audit'}/" in res.stderr and "no ground truth" in res.stderr
