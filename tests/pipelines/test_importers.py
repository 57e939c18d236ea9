"""Dataset import: every layout on tiny fixtures, bad files quarantined with their reason, parent-label removal,
pool routing, splits, and idempotent re-import via content hashes."""
from __future__ import annotations

import importlib.util
import json
import shutil
from pathlib import Path

import pytest

from pipelines.corpus.config import ImportConfig
from pipelines.corpus.importers import LayoutError, clip_domain, hash_split, label_domain, run_import
from pipelines.corpus.layouts import open_layout
from pipelines.corpus.ontology import Ontology, OntologyError
from storage import manifests as mf
from storage.audio import ERROR_KINDS, AudioConfig

_spec = importlib.util.spec_from_file_location("corpus_fixtures", Path(__file__).with_name("corpus_fixtures.py"))
fx = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(fx)  # type: ignore[union-attr]
SR, wav, make_esc50, make_fsd50k, make_audioset = fx.SR, fx.wav, fx.make_esc50, fx.make_fsd50k, fx.make_audioset
write_ontology = fx.write_ontology


def do_import(layout: str, root: Path, out: Path, ontology: Path | None = None, cfg: ImportConfig | None = None, seed: int = 0):
    cfg = cfg or ImportConfig()
    reader = open_layout(layout, root, cfg, ontology, seed)
    ticks: list[int] = []
    report = run_import(reader.candidates(), out, layout=layout, dataset=reader.dataset, root=root,
                        audio_cfg=AudioConfig(), import_cfg=cfg, seed=seed, progress=ticks.append,
                        parent_labels_removed=lambda: reader.parents_removed, notes=reader.notes)
    assert len(ticks) == report.candidates
    return report, reader


def rows(out: Path, pool: str) -> list[dict]:
    d = out / "manifests" / pool
    return list(mf.iter_rows(d)) if d.is_dir() and any(d.glob("*.parquet")) else []


# --------------------------------------------------------------------------------------------------- ESC-50


def test_esc50_import_quarantines_every_bad_file_and_keeps_going(tmp_path: Path) -> None:
    root, out = tmp_path / "ESC-50", tmp_path / "corpus"
    expected = make_esc50(root)
    report, _ = do_import("esc50", root, out)
    assert report.candidates == 4 + len(expected)
    assert report.imported == report.imported_sources == 3
    assert report.duplicate == 1
    assert dict(report.quarantined_by_kind) == {kind: 1 for kind in expected.values()}
    assert set(expected.values()) == set(ERROR_KINDS)  # every failure mode is exercised

    quarantine = rows(out, "quarantine")
    by_name = {Path(r["path"]).name: r for r in quarantine}
    assert {name: r["error_kind"] for name, r in by_name.items()} == expected
    for name, r in by_name.items():
        assert r["stage"] == "import" and name in r["path"] and r["message"]

    sources = {r["clip_id"]: r for r in rows(out, "sources")}
    assert set(sources) == {"esc50:1-100-A-0", "esc50:4-200-A-1", "esc50:5-300-A-2"}
    assert [sources[c]["split"] for c in sorted(sources)] == ["train", "val", "test"]
    baby = sources["esc50:4-200-A-1"]
    assert baby["labels"] == ["crying_baby"] and baby["label_ids"] == ["crying_baby"]
    assert baby["label_names"] == ["crying baby"] and baby["label_mids"] == [None]  # not an AudioSet class name
    dog = sources["esc50:1-100-A-0"]
    assert dog["labels"] == ["dog"] and dog["label_names"] == ["Dog"] and dog["label_mids"] == ["/m/0bt9lr"]  # by slug
    assert dog["active_start_s"] == 0.0 and dog["active_end_s"] == 1.0
    for r in sources.values():
        assert Path(r["path"]).is_absolute() and Path(r["path"]).is_file()
        assert str(root.resolve()) in r["path"]  # manifests point at the originals; nothing is copied
        assert r["sample_rate"] == SR and r["num_frames"] == SR and r["duration_s"] == 1.0
        assert r["content_hash"] == mf.file_hash(r["path"])
    assert not list(out.rglob("*.wav"))

    saved = json.loads((out / "import_report.json").read_text())
    assert saved["counts"]["imported"] == 3 and saved["counts"]["duplicate"] == 1
    assert saved["counts"]["quarantined"] == 8
    assert saved["hours"]["sources"] == pytest.approx(3 / 3600, abs=1e-6)
    assert saved["hours_per_class"]["sources"]["dog"] == pytest.approx(1 / 3600, abs=1e-6)
    assert saved["manifest_totals"]["sources"]["clips"] == 3


def test_reimport_is_idempotent(tmp_path: Path) -> None:
    root, out = tmp_path / "ESC-50", tmp_path / "corpus"
    make_esc50(root)
    do_import("esc50", root, out)
    n_quarantine = len(rows(out, "quarantine"))
    second, _ = do_import("esc50", root, out)
    assert second.imported == 0
    assert second.duplicate == 4  # the three clips and the copy
    assert second.quarantined == 8  # still reported, ...
    assert len(rows(out, "quarantine")) == n_quarantine  # ... but not recorded twice
    assert len(rows(out, "sources")) == 3
    moved = tmp_path / "moved"
    shutil.copytree(root, moved)  # same bytes at another path are still duplicates
    third, _ = do_import("esc50", moved, out)
    assert third.imported == 0 and third.duplicate == 4
    assert json.loads((out / "import_report.json").read_text())["manifest_totals"]["sources"]["clips"] == 3


def test_changed_file_with_known_clip_id_is_quarantined(tmp_path: Path) -> None:
    root, out = tmp_path / "ESC-50", tmp_path / "corpus"
    make_esc50(root)
    do_import("esc50", root, out)
    wav(root / "audio" / "1-100-A-0.wav")  # new content under an already imported clip id
    report, _ = do_import("esc50", root, out)
    assert report.imported == 0 and report.quarantined_by_kind["duplicate_id"] == 1
    assert report.duplicate == 3  # two untouched clips and the copy that still holds the old content
    assert len({r["clip_id"] for r in rows(out, "sources")}) == len(rows(out, "sources")) == 3


def test_esc50_layout_errors(tmp_path: Path) -> None:
    expects = r"\(esc50 layout expects audio/ and meta/esc50.csv\)"
    with pytest.raises(LayoutError, match=f"^{tmp_path / 'audio'}: not found {expects}$"):
        open_layout("esc50", tmp_path, ImportConfig())
    (tmp_path / "audio").mkdir()
    with pytest.raises(LayoutError, match=f"^{tmp_path / 'meta' / 'esc50.csv'}: not found {expects}$"):
        open_layout("esc50", tmp_path, ImportConfig())
    (tmp_path / "meta").mkdir()
    (tmp_path / "meta" / "esc50.csv").write_text("name,fold\nx.wav,1\n")
    with pytest.raises(LayoutError, match=r"missing column\(s\) \['filename', 'category'\]"):
        open_layout("esc50", tmp_path, ImportConfig())
    with pytest.raises(LayoutError, match="not a directory"):
        open_layout("esc50", tmp_path / "absent", ImportConfig())


def test_malformed_metadata_row_is_quarantined(tmp_path: Path) -> None:
    root = tmp_path / "esc"
    wav(root / "audio" / "ok.wav")
    (root / "meta").mkdir()
    (root / "meta" / "esc50.csv").write_text("filename,fold,category\nok.wav,1,dog\nbroken.wav,one,dog\nnolabel.wav,1,\n")
    wav(root / "audio" / "nolabel.wav")
    report, _ = do_import("esc50", root, tmp_path / "out")
    assert report.imported == 1
    assert dict(report.quarantined_by_kind) == {"bad_metadata": 1, "no_labels": 1}


# --------------------------------------------------------------------------------------------------- ontology

def test_ontology_removes_ancestors_only(tmp_path: Path) -> None:
    onto = Ontology.load(write_ontology(tmp_path / "ontology.json"))
    assert onto.ancestors("/m/05tny_") == {"/m/0bt9lr", "/m/068hy", "/m/0jbk"}
    assert onto.remove_ancestors(["/m/0jbk", "/m/05tny_", "/m/0bt9lr"]) == ["/m/05tny_"]
    assert onto.remove_ancestors(["/m/0bt9lr", "/m/05r5c", "/m/04rlf", "/m/0bt9lr"]) == ["/m/0bt9lr", "/m/05r5c"]
    assert onto.remove_ancestors(["/m/06mb1", "/m/09x0r"]) == ["/m/06mb1", "/m/09x0r"]  # siblings stay
    cyclic = Ontology(names={"a": "A", "b": "B"}, children={"a": ["b"], "b": ["a"]})
    assert cyclic.ancestors("a") == {"b"}


def test_ontology_errors_name_the_file(tmp_path: Path) -> None:
    with pytest.raises(OntologyError, match="does not exist"):
        Ontology.load(tmp_path / "none.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(OntologyError, match="bad.json"):
        Ontology.load(bad)
    bad.write_text(json.dumps([{"name": "no id"}]))
    with pytest.raises(OntologyError, match=r"entry \[0\]"):
        Ontology.load(bad)


# --------------------------------------------------------------------------------------------------- FSD50K


def test_fsd50k_with_ontology_routes_pools_and_removes_parents(tmp_path: Path) -> None:
    root, out = tmp_path / "FSD50K", tmp_path / "corpus"
    make_fsd50k(root)
    report, reader = do_import("fsd50k", root, out)
    sources = {r["clip_id"]: r for r in rows(out, "sources")}
    scenes = {r["clip_id"]: r for r in rows(out, "scenes")}
    assert set(sources) == {"fsd50k:101", "fsd50k:201"}
    assert sources["fsd50k:101"]["labels"] == ["bark"] and sources["fsd50k:101"]["label_ids"] == ["/m/05tny_"]
    assert sources["fsd50k:101"]["label_names"] == ["Bark"] and sources["fsd50k:101"]["label_mids"] == ["/m/05tny_"]
    assert sources["fsd50k:101"]["split"] == "train" and sources["fsd50k:201"]["split"] == "test"
    assert set(scenes) == {"fsd50k:102"}
    scene = scenes["fsd50k:102"]
    assert scene["labels"] == scene["event_labels"] == ["bark", "piano"]
    assert scene["label_names"] == ["Bark", "Piano"] and scene["label_mids"] == ["/m/05tny_", "/m/05r5c"]
    assert scene["split"] == "val" and scene["domain"] == "sound"
    assert report.parent_labels_removed == 3 + 3
    assert report.quarantined_by_kind == {"bad_metadata": 1}
    saved = json.loads((out / "import_report.json").read_text())
    assert saved["parent_labels_removed"] == 6
    assert saved["hours_per_class"]["scenes"] == {"bark": pytest.approx(2 / 3600, abs=1e-6), "piano": pytest.approx(2 / 3600, abs=1e-6)}


def test_fsd50k_without_ontology_uses_the_shipped_one(tmp_path: Path) -> None:
    """No ontology.json in the dataset and none given: the packaged AudioSet ontology still removes the parents."""
    root, out = tmp_path / "FSD50K", tmp_path / "corpus"
    make_fsd50k(root, with_ontology=False)
    report, reader = do_import("fsd50k", root, out)
    assert reader.ontology is not None and reader.ontology.source.endswith("models/data/audioset_ontology.json")
    assert any("audioset_ontology.json" in note for note in report.notes)
    sources = {r["clip_id"]: r for r in rows(out, "sources")}
    scenes = {r["clip_id"]: r for r in rows(out, "scenes")}
    # Bark,Dog,Domestic_animals_and_pets,Animal -> bark alone: a clean source, not a four-label scene
    assert sources["fsd50k:101"]["labels"] == ["bark"] and sources["fsd50k:101"]["label_mids"] == ["/m/05tny_"]
    assert scenes["fsd50k:102"]["event_labels"] == ["bark", "piano"]
    assert report.imported_sources == 2 and report.imported_scenes == 1 and report.parent_labels_removed == 6


def test_fsd50k_label_slugs_follow_the_fsd50k_vocabulary(tmp_path: Path) -> None:
    """A kept label with a comma in its AudioSet name gets the slug FSD50K writes, and its display name beside it."""
    root, out = tmp_path / "FSD50K", tmp_path / "corpus"
    wav(root / "FSD50K.dev_audio" / "7.wav")
    (root / "ground_truth").mkdir(parents=True)
    (root / "ground_truth" / "dev.csv").write_text(
        'fname,labels,mids,split\n7,"Domestic_animals_and_pets,Alarm_clock","/m/068hy,/m/046dlr",train\n')
    do_import("fsd50k", root, out)
    scene = rows(out, "scenes")[0]
    assert scene["labels"] == ["domestic_animals_and_pets", "alarm_clock"]
    assert scene["label_names"] == ["Domestic animals, pets", "Alarm clock"]
    assert scene["label_mids"] == ["/m/068hy", "/m/046dlr"]


def test_fsd50k_missing_ground_truth_and_audio(tmp_path: Path) -> None:
    with pytest.raises(LayoutError, match=f"^{tmp_path / 'ground_truth'}: not found \\(fsd50k layout expects ground_truth/dev.csv"):
        open_layout("fsd50k", tmp_path, ImportConfig())
    (tmp_path / "ground_truth").mkdir()
    (tmp_path / "ground_truth" / "dev.csv").write_text("fname,labels,mids,split\n")
    with pytest.raises(LayoutError, match=f"^{tmp_path / 'FSD50K.dev_audio'}: not found \\(fsd50k layout expects the dev audio"):
        open_layout("fsd50k", tmp_path, ImportConfig())


# --------------------------------------------------------------------------------------------------- AudioSet


def test_audioset_segments_with_ontology(tmp_path: Path) -> None:
    root, out = tmp_path / "audioset", tmp_path / "corpus"
    make_audioset(root)
    report, _ = do_import("audioset", root, out, seed=3)
    sources = {r["clip_id"]: r for r in rows(out, "sources")}
    scenes = {r["clip_id"]: r for r in rows(out, "scenes")}
    assert set(sources) == {"audioset:aaa_30.000", "audioset:eee_0.000", "audioset:fff_5.000"}
    assert sources["audioset:fff_5.000"]["labels"] == ["speech"] and sources["audioset:fff_5.000"]["domain"] == "speech"
    assert sources["audioset:aaa_30.000"]["labels"] == ["dog"]  # parent "Animal" removed
    assert sources["audioset:aaa_30.000"]["label_names"] == ["Dog"] and sources["audioset:aaa_30.000"]["label_mids"] == ["/m/0bt9lr"]
    assert sources["audioset:aaa_30.000"]["split"] in ("train", "val")
    assert sources["audioset:eee_0.000"]["split"] == "test"
    assert scenes["audioset:bbb_0.000"]["labels"] == ["bark", "piano"]  # Dog and Music removed
    assert dict(report.quarantined_by_kind) == {"missing": 1, "unknown_label": 1, "bad_metadata": 1}
    assert report.parent_labels_removed == 1 + 2
    missing = [r for r in rows(out, "quarantine") if r["error_kind"] == "missing"][0]
    assert "ccc" in missing["path"]


def test_audioset_ontology_sources(tmp_path: Path) -> None:
    root = tmp_path / "as"
    make_audioset(root)
    (root / "ontology.json").unlink()
    shipped = open_layout("audioset", root, ImportConfig())  # the packaged ontology by default
    assert shipped.ontology is not None and shipped.ontology.source.endswith("audioset_ontology.json")
    assert len(shipped.ontology.names) == 632
    other = write_ontology(tmp_path / "elsewhere" / "onto.json")
    reader = open_layout("audioset", root, ImportConfig(), other)  # --ontology elsewhere wins
    assert reader.ontology is not None and reader.ontology.source == str(other)
    with pytest.raises(LayoutError, match=f"^{tmp_path / 'none.json'}: ontology file not found"):
        open_layout("audioset", root, ImportConfig(), tmp_path / "none.json")
    with pytest.raises(LayoutError, match=r"\*segments\*.csv: not found \(audioset layout expects"):
        open_layout("audioset", tmp_path / "elsewhere", ImportConfig())


# --------------------------------------------------------------------------------------------------- folders


def test_folders_layout_hash_split_and_bad_files(tmp_path: Path) -> None:
    root, out = tmp_path / "mysounds", tmp_path / "corpus"
    for i in range(12):
        wav(root / "dog" / f"d{i}.wav")
    wav(root / "car_horn" / "nested" / "h.wav")
    (root / "car_horn" / "README.txt").write_text("not audio")
    (root / "car_horn" / "broken.flac").write_bytes(b"nope")
    report, reader = do_import("folders", root, out, cfg=ImportConfig(val_fraction=0.3, test_fraction=0.3), seed=1)
    assert report.imported_sources == 13 and dict(report.quarantined_by_kind) == {"unreadable": 1}
    assert any("non-audio" in n for n in reader.notes)
    srcs = rows(out, "sources")
    assert {r["labels"][0] for r in srcs} == {"dog", "car_horn"}
    assert {r["label_names"][0] for r in srcs} == {"Dog", "car horn"}  # the AudioSet name where the slug matches one
    assert {r["split"] for r in srcs} == {"train", "val", "test"}
    for r in srcs:
        assert r["split"] == hash_split(f"mysounds:{r['clip_id']}", 1, 0.3, 0.3)


def test_folders_layout_with_split_dirs(tmp_path: Path) -> None:
    root = tmp_path / "split"
    wav(root / "train" / "bell" / "a.wav")
    wav(root / "test" / "bell" / "b.wav")
    wav(root / "val" / "Speech" / "c.wav")
    do_import("folders", root, tmp_path / "out")
    got = {(r["labels"][0], r["split"], r["domain"]) for r in rows(tmp_path / "out", "sources")}
    assert got == {("bell", "train", "music"), ("bell", "test", "music"), ("speech", "val", "speech")}
    with pytest.raises(LayoutError, match=r"<class>/: no class folder found \(folders layout expects"):
        open_layout("folders", tmp_path / "split" / "train" / "bell", ImportConfig())


# --------------------------------------------------------------------------------------------------- helpers


def test_hash_split_is_deterministic_and_follows_fractions() -> None:
    keys = [f"clip{i}" for i in range(4000)]
    splits = [hash_split(k, 0, 0.1, 0.2) for k in keys]
    assert splits == [hash_split(k, 0, 0.1, 0.2) for k in keys]
    assert abs(splits.count("test") / 4000 - 0.2) < 0.03 and abs(splits.count("val") / 4000 - 0.1) < 0.03
    assert splits != [hash_split(k, 1, 0.1, 0.2) for k in keys]


def test_label_domains() -> None:
    assert label_domain("Male speech, man speaking") == "speech"
    assert label_domain("Electric_guitar") == "music"
    assert label_domain("dog") == "sound"
    assert label_domain("dog", {"dog": "music"}) == "music"
    assert label_domain("alarm_clock", {"Alarm clock": "music"}) == "music"  # overrides match by slug
    assert clip_domain(["Piano", "Violin, fiddle"]) == "music"
    assert clip_domain(["Piano", "Bark"]) == "sound"
