"""`stemforge mix` end to end: shards with the contract's fields, resumable/idempotent runs, exact rerender."""
from __future__ import annotations

import json
import tarfile
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from click.testing import CliRunner

from flows.cli import cli
from toy_sources import write_toy_sources
from storage.audio import decode_audio

FAST = ["--set", "mixing.duration_s=1.0", "--set", "shards.max_count=8", "--quiet"]
INPROC = [*FAST, "--set", "engine.backend=inprocess"]
RAY = [*FAST, "--set", "engine.backend=ray"]  # with the ray_local fixture: ray_session reuses the test's Ray


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    return write_toy_sources(tmp_path_factory.mktemp("corpus"), per_class=2, seconds=1.5)


def _run(args: list[str]):
    return CliRunner().invoke(cli, args, catch_exceptions=False)


def _samples(store: Path) -> dict[str, dict[str, bytes]]:
    out: dict[str, dict[str, bytes]] = {}
    for tar in sorted(store.glob("*.tar")):
        with tarfile.open(tar) as tf:
            for m in tf.getmembers():
                key, ext = m.name.split(".", 1)
                out.setdefault(key, {})[ext] = tf.extractfile(m).read()
    return out


def test_mix_writes_contract_samples_and_rerenders(tmp_path: Path) -> None:
    corpus = write_toy_sources(tmp_path / "own", per_class=2, seconds=1.5)  # this test edits a source file
    store = tmp_path / "shards"
    args = ["mix", "--sources", str(corpus), "--recipe", "promptsep", "--num", "20", "--out", str(store), "--seed", "7", *INPROC]
    result = _run(args)
    assert result.exit_code == 0, result.output
    samples = _samples(store)
    assert len(samples) == 20 and len(list(store.glob("*.tar"))) == 3
    for key, members in samples.items():
        meta = json.loads(members["json"])
        assert key == meta["key"] and key.startswith("promptsep-000007-") and "." not in key
        for field in ("sample_rate", "num_frames", "duration_s", "recipe", "operator", "prompt", "positive_labels",
                      "negative_labels", "positive_text", "negative_text", "query_mode", "silent_target",
                      "target_labels", "residual_labels", "spans", "spec", "seed", "lineage"):
            assert field in meta, field
        assert meta["lineage"]["config_hash"] and meta["lineage"]["code_version"].startswith("0.1.0")
        assert (meta["positive_text"] is None) == (meta["query_mode"] == "neg")
        assert (meta["negative_text"] is None) == (meta["query_mode"] == "pos")
        mix, _ = decode_audio(members["mix.flac"])
        tgt, _ = decode_audio(members["target.flac"])
        res, _ = decode_audio(members["residual.flac"])
        assert np.max(np.abs(mix - tgt - res)) <= 3 * 2.0 ** -23
    report = json.loads((store / "mix_report.json").read_text())
    assert report["written"] == 20 and report["tuples_per_s"] > 0

    before = {p.name: p.read_bytes() for p in store.glob("*.tar")}
    assert _run(args).exit_code == 0  # idempotent re-run
    assert {p.name: p.read_bytes() for p in store.glob("*.tar")} == before

    key = sorted(samples)[13]
    out = tmp_path / "rerender"
    result = _run(["mix", "rerender", "--shards", str(store), "--key", key, "--out", str(out), "--quiet"])
    assert result.exit_code == 0, result.output
    assert (out / f"{key}.mix.flac").read_bytes() == samples[key]["mix.flac"]

    # a changed source file must be detected
    spec = json.loads(samples[key]["json"])["spec"]
    victim = Path(spec["components"][0]["path"])
    audio, sr = sf.read(victim, dtype="float32")
    sf.write(victim, audio * 0.5 + 0.01, sr, subtype="PCM_24")
    result = _run(["mix", "rerender", "--shards", str(store), "--key", key, "--out", str(out), "--quiet"])
    assert result.exit_code == 1
    assert "differs" in result.output


def test_mix_resumes_after_partial_store(tmp_path: Path, corpus: Path) -> None:
    full, part = tmp_path / "full", tmp_path / "part"
    base = ["mix", "--sources", str(corpus), "--recipe", "opensep", "--out"]
    assert _run([*base, str(full), "--num", "16", *INPROC]).exit_code == 0
    assert _run([*base, str(part), "--num", "16", *INPROC]).exit_code == 0
    # simulate a crash after the first shard group: drop the second group's shard, index and marker
    (part / "shard-000001.tar").unlink()
    (part / "index" / "shard-000001.parquet").unlink()
    (part / "index" / "groups" / "shard-000001.json").unlink()
    (part / "_SUCCESS").unlink()
    assert _run([*base, str(part), "--num", "16", *INPROC]).exit_code == 0
    assert (part / "shard-000001.tar").read_bytes() == (full / "shard-000001.tar").read_bytes()


def test_mix_usage_and_data_errors(tmp_path: Path, corpus: Path) -> None:
    assert _run(["mix", "--sources", str(corpus), "--num", "3", "--quiet"]).exit_code == 2
    result = _run(["mix", "--sources", str(corpus), "--num", "3", "--out", str(tmp_path / "x"), "--quiet",
                   "--set", "mixing.split=test"])  # refused before Ray would start
    assert result.exit_code == 3 and "no clips in split 'test'" in result.output
    result = _run(["mix", "rerender", "--shards", str(tmp_path), "--key", "nope", "--out", str(tmp_path / "r"), "--quiet"])
    assert result.exit_code == 3


@pytest.mark.timeout(240)
def test_mix_with_two_ray_workers_reports_every_failed_tuple(ray_local, tmp_path: Path) -> None:
    """Tuples whose source file is unreadable are rendered (and fail) in Ray worker processes: every one of them
    must reach mix_report.json, and the shards must equal an in-process run's."""
    from pipelines.mixing.job import make_key

    corpus = write_toy_sources(tmp_path / "own", per_class=2, seconds=1.5)
    broken = sorted((tmp_path / "own" / "sources").glob("*.flac"))[::4]
    for path in broken:
        path.write_bytes(b"not a flac file" * 10)
    num, seed = 40, 3
    base = ["mix", "--sources", str(corpus), "--recipe", "promptsep", "--num", str(num), "--seed", str(seed)]
    ray_store, ref_store = tmp_path / "ray", tmp_path / "ref"
    result = _run([*base, "--out", str(ray_store), "--workers", "2", *RAY])
    assert result.exit_code == 0, result.output
    report = json.loads((ray_store / "mix_report.json").read_text())
    written = set(_samples(ray_store))
    failed = {make_key("promptsep", seed, i) for i in range(num)} - written
    assert failed, "the broken sources should have failed some tuples"
    assert report["executor"] == "ray" and report["workers"] == 2 and report["groups_written"] == 5
    assert report["num_errors"] == len(failed) == report["dropped"]
    assert {e["key"] for e in report["errors"]} == failed
    assert all(e["reason"] for e in report["errors"])
    assert _run([*base, "--out", str(ref_store), *INPROC]).exit_code == 0
    assert json.loads((ref_store / "mix_report.json").read_text())["errors"] == report["errors"]
    assert {p.name: p.read_bytes() for p in ray_store.glob("*.tar")} == {p.name: p.read_bytes() for p in ref_store.glob("*.tar")}


def test_mix_split_chooses_the_source_split(tmp_path: Path, corpus: Path) -> None:
    from storage import manifests as mf

    rows = list(mf.iter_rows(corpus))
    val_ids = {r["clip_id"] for r in rows[1::2]}
    split_manifest = tmp_path / "split-sources"
    mf.write_manifest(split_manifest, mf.SOURCE_CLIP_SCHEMA, [dict(r, split="val" if r["clip_id"] in val_ids else "train") for r in rows])
    out = tmp_path / "val-shards"
    result = _run(["mix", "--sources", str(split_manifest), "--split", "val", "--num", "6", "--out", str(out), *INPROC])
    assert result.exit_code == 0, result.output
    used = {cid for s in _samples(out).values() for cid in json.loads(s["json"])["lineage"]["source_clip_ids"]}
    assert used and used <= val_ids
    assert json.loads((out / "mix_report.json").read_text())["split"] == "val"
    bad = _run(["mix", "--sources", str(split_manifest), "--split", "nope", "--num", "2", "--out", str(tmp_path / "x"), *INPROC])
    assert bad.exit_code == 2


def test_mix_num_delivers_exactly_n_despite_silent_excerpts(tmp_path: Path) -> None:
    """Clips of 5 s that sound for 2.5 s, in a manifest without active spans: many first draws cut a silent excerpt;
    each such tuple is redrawn, so --num 24 writes 24 tuples and drops none."""
    from storage import manifests as mf

    sr, rows, rng = 16000, [], np.random.default_rng(0)
    for c, label in enumerate(("dog", "siren", "rain", "piano")):
        for j in range(3):
            x = np.zeros(5 * sr, dtype=np.float32)
            at = int(rng.uniform(0.1, 2.4) * sr)
            x[at:at + int(2.5 * sr)] = 0.3 * np.sin(2 * np.pi * (200 + 90 * c + 11 * j) * np.arange(int(2.5 * sr)) / sr)
            path = tmp_path / "clips" / f"{label}-{j}.wav"
            path.parent.mkdir(parents=True, exist_ok=True)
            sf.write(path, x, sr, subtype="FLOAT")
            rows.append({"clip_id": f"{label}-{j}", "path": str(path), "sample_rate": sr, "num_frames": x.size,
                         "duration_s": 5.0, "labels": [label], "label_ids": [label], "domain": "sound", "split": "train",
                         "content_hash": mf.file_hash(path), "dataset": "padded"})
    manifest = tmp_path / "sources"
    mf.write_manifest(manifest, mf.SOURCE_CLIP_SCHEMA, rows)
    out = tmp_path / "shards"
    result = _run(["mix", "--sources", str(manifest), "--recipe", "promptsep", "--num", "24", "--out", str(out),
                   "--set", "mixing.duration_s=2.0", "--set", "shards.max_count=8", "--quiet", "--set", "engine.backend=inprocess"])
    assert result.exit_code == 0, result.output
    report = json.loads((out / "mix_report.json").read_text())
    assert report["written"] == 24 and report["dropped"] == 0 and report["errors"] == []
    infos = [json.loads(s["json"])["spec"]["info"] for s in _samples(out).values()]
    assert any(i.get("redraw") for i in infos)
