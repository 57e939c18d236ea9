"""The `stems` import layout: real mixture folders with per-source files become a natural-scene manifest plus audit
stems (the demo corpus's shape), checked for rate, length and the sum; the engine's natural evaluation reads them."""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from pipelines.corpus.config import ImportConfig
from pipelines.corpus.importers import LayoutError
from pipelines.corpus.layouts import open_layout
from pipelines.corpus.stems import import_stems, stem_label, sum_sdr_db
from storage import manifests as mf
from storage.audio import AudioConfig

_spec = importlib.util.spec_from_file_location("corpus_fixtures", Path(__file__).with_name("corpus_fixtures.py"))
fx = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(fx)  # type: ignore[union-attr]


def do_import(root: Path, out: Path, cfg: ImportConfig | None = None):
    cfg = cfg or ImportConfig()
    reader = open_layout("stems", root, cfg)
    return import_stems(reader.candidates(), out, dataset=reader.dataset, root=root, audio_cfg=AudioConfig(),
                        import_cfg=cfg, notes=reader.notes)


def test_stems_import_writes_scenes_and_audit_stems(tmp_path: Path) -> None:
    root, out = tmp_path / "evalset", tmp_path / "corpus"
    expected = fx.make_stems(root)
    report = do_import(root, out)
    assert report.candidates == 5 and report.imported_scenes == 2
    assert dict(report.quarantined_by_kind) == {k: 1 for k in expected.values() if k}

    scenes = {r["clip_id"]: r for r in mf.iter_rows(out / "manifests" / "scenes", expect="natural_scene")}
    assert set(scenes) == {"evalset:song_sum", "evalset:take_bleed"}
    song, take = scenes["evalset:song_sum"], scenes["evalset:take_bleed"]
    assert song["path"] == str((root / "song_sum" / "mixture.wav").resolve())
    assert song["event_labels"] == song["labels"] == ["drums", "vocals"]  # the silent other.wav is no event
    assert song["stems_relation"] == "sum" and song["sum_sdr_db"] >= 100
    assert song["split"] == "test" and song["audit_dir"] == str((root / "song_sum").resolve())
    assert song["sample_rate"] == fx.SR and song["num_frames"] == 2 * fx.SR
    drums = next(e for e in song["events"] if e["label"] == "drums")
    assert drums["onset_s"] == pytest.approx(0.5, abs=0.05) and drums["offset_s"] == pytest.approx(1.0, abs=0.05)
    assert take["event_labels"] == ["alarm_clock", "door_knock"]  # slugs of stem_alarm_clock / stem_Door-Knock
    assert take["label_names"] == ["Alarm clock", "door knock"] and take["label_mids"] == ["/m/046dlr", None]
    assert take["label_ids"] == ["alarm_clock", "Door-Knock"]  # as written in the file names
    assert take["stems_relation"] == "not_sum" and 0 < take["sum_sdr_db"] < 30

    audit = sorted((r["scene_id"], r["label"], Path(r["path"]).name) for r in mf.iter_rows(out / "manifests" / "audit", expect="audit_stem"))
    assert audit == [("evalset:song_sum", "drums", "drums.wav"), ("evalset:song_sum", "other", "other.wav"),
                     ("evalset:song_sum", "vocals", "vocals.wav"),
                     ("evalset:take_bleed", "alarm_clock", "stem_alarm_clock.flac"),
                     ("evalset:take_bleed", "door_knock", "stem_Door-Knock.flac")]

    quarantine = {r["error_kind"]: r for r in mf.iter_rows(out / "manifests" / "quarantine", expect="quarantine")}
    assert quarantine["stem_length_mismatch"]["path"] == str(root / "bad_length" / "piano.wav")
    assert f"{root / 'bad_length' / 'piano.wav'}: {int(0.9 * fx.SR)} frames but the mixture mixture.wav has {fx.SR}" \
        in quarantine["stem_length_mismatch"]["message"]
    assert f"{root / 'bad_rate' / 'bass.wav'}: 22050 Hz but the mixture mixture.wav is {fx.SR} Hz" \
        in quarantine["stem_rate_mismatch"]["message"]
    assert quarantine["no_stems"]["message"].startswith(f"{root / 'missing_stem'}/<label>.<ext>: no stem file next to mixture.wav")

    saved = json.loads((out / "import_report.json").read_text())
    assert saved["layout"] == "stems"
    assert saved["stems"] == {"audit_stems": 5, "sum": 1, "not_sum": 1, "silent_stems": 1, "sum_min_db": 30.0}
    assert saved["manifest_totals"]["scenes"]["clips"] == 2

    again = do_import(root, out)  # idempotent: mixtures dedupe by content, stems are not added twice
    assert again.imported_scenes == 0 and again.duplicate == 2
    assert mf.count_rows(out / "manifests" / "audit") == 5


def test_natural_evaluation_reads_the_imported_stems(tmp_path: Path) -> None:
    from engine.evaluation import natural_items, natural_manifests

    root, out = tmp_path / "evalset", tmp_path / "corpus"
    fx.make_stems(root)
    do_import(root, out)
    scenes, audit = natural_manifests(out)
    items = list(natural_items(scenes, audit, "test", fx.SR))
    assert sorted(it.key for it in items) == ["evalset:song_sum/drums", "evalset:song_sum/vocals",
                                              "evalset:take_bleed/alarm_clock", "evalset:take_bleed/door_knock"]
    vocals = next(it for it in items if it.key.endswith("/vocals"))
    truth, _ = sf.read(root / "song_sum" / "vocals.wav", dtype="float32")
    np.testing.assert_allclose(vocals.target, truth, atol=1e-6)


def test_split_folders_and_hash_split(tmp_path: Path) -> None:
    root = tmp_path / "sets"
    fx.make_stems(root / "val")
    fx.make_stems(root / "train")
    report = do_import(root, tmp_path / "a")
    splits = {r["clip_id"]: r["split"] for r in mf.iter_rows(tmp_path / "a" / "manifests" / "scenes")}
    assert report.imported_scenes == 2 and report.duplicate == 2  # the same bytes in val/ duplicate train/'s
    assert splits == {"sets:train/song_sum": "train", "sets:train/take_bleed": "train"}
    flat = tmp_path / "flat"
    fx.make_stems(flat)
    do_import(flat, tmp_path / "b", ImportConfig(stems_split="hash", val_fraction=0.0, test_fraction=0.0))
    assert {r["split"] for r in mf.iter_rows(tmp_path / "b" / "manifests" / "scenes")} == {"train"}


def test_sum_tolerance_is_configurable(tmp_path: Path) -> None:
    root = tmp_path / "evalset"
    fx.make_stems(root)
    do_import(root, tmp_path / "o", ImportConfig(stems_sum_min_db=0.0))
    assert {r["stems_relation"] for r in mf.iter_rows(tmp_path / "o" / "manifests" / "scenes")} == {"sum"}


def test_layout_errors_name_what_is_expected(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(LayoutError, match=rf"^{empty}/<mixture>/: no mixture folder found \(stems layout expects"):
        open_layout("stems", empty, ImportConfig())
    (empty / "song").mkdir()
    sf.write(empty / "song" / "vocals.wav", np.zeros(100, dtype=np.float32), fx.SR)
    with pytest.raises(LayoutError, match=rf"^{empty / 'song'}/mixture.<ext>: not found"):
        open_layout("stems", empty, ImportConfig())


def test_stem_names_and_sum_sdr() -> None:
    assert [stem_label(Path(p)) for p in ("vocals.wav", "stem_Door-Knock.flac", "STEM-bass.ogg", "stems.wav")] == \
        ["vocals", "Door-Knock", "bass", "stems"]
    x = np.ones(100)
    assert sum_sdr_db(x, [0.5 * x, 0.5 * x]) == 150.0
    assert sum_sdr_db(x, [0.9 * x]) == pytest.approx(20.0, abs=1e-6)
