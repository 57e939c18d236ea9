"""The review page of a real tiny run, in a real headless Chromium (Debian's `chromium`, driven by Playwright).

One tiny run (configs/tiny.yaml, in-process backend, remix and PC thresholds loosened so each filter step keeps
some candidates and drops others) is made for the module by `stemforge run`, then its page is
built and opened over `file://`. Checked as a person would use it: no console errors and no request that leaves
the page's folder; every <audio> element loads (a finite duration) and every image decodes, in every iteration;
clicking a column header reorders the table; moving a threshold slider changes the kept count to the count
computed here from the Parquet table. Without Chromium (and no way to install it: root + apt-get) it skips.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import pytest

from engine.review import build_review
from engine.review.run_data import rules_of

TINY = str(Path(__file__).resolve().parents[2] / "configs" / "tiny.yaml")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]
OVERRIDES = ["engine.backend=inprocess", "engine.final.enabled=false", "filters.itt_min_db=-10", "filters.pc_max=10"]


def chromium() -> str:
    """/usr/bin/chromium, installed with apt-get when missing and possible; otherwise the test skips."""
    found = shutil.which("chromium") or ("/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else None)
    if found:
        return found
    if os.geteuid() == 0 and shutil.which("apt-get"):
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        install = ["apt-get", "install", "-y", "--no-install-recommends", "chromium"]
        if subprocess.run(install, env=env, capture_output=True, timeout=900).returncode != 0:
            subprocess.run(["apt-get", "update"], env=env, capture_output=True, timeout=900)
            subprocess.run(install, env=env, capture_output=True, timeout=900)
        found = shutil.which("chromium")
    if not found:
        pytest.skip("headless Chromium is not installed (/usr/bin/chromium) and cannot be installed here "
                    "(needs root and apt-get): `apt-get install chromium`")
    return found


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`stemforge run` on the tiny preset, as a user runs it (its own process: its ephemeral Prefect API and that
    API's shutdown stay out of the test process)."""
    out = tmp_path_factory.mktemp("review-run")
    sets = [a for o in OVERRIDES for a in ("--set", o)]
    done = subprocess.run([sys.executable, "-m", "flows.cli", "run", "--config", TINY, "--out", str(out), "--name", "tiny",
                           "-q", *sets], capture_output=True, text=True, timeout=600, cwd=Path(__file__).resolve().parents[2])
    assert done.returncode == 0, done.stderr[-3000:]
    return out / "tiny"


@pytest.fixture(scope="module")
def browser_page(tiny_run: Path) -> Iterator[dict[str, Any]]:
    from playwright.sync_api import sync_playwright

    executable = chromium()
    index = build_review(tiny_run, per_filter=2, seed=0)
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            errors: list[str] = []
            requests: list[str] = []
            page.on("console", lambda m: errors.append(f"console {m.type}: {m.text}") if m.type == "error" else None)
            page.on("pageerror", lambda e: errors.append(f"page error: {e}"))
            page.on("requestfailed", lambda r: errors.append(f"request failed: {r.url} {r.failure}"))
            page.on("request", lambda r: requests.append(r.url))
            page.goto(index.as_uri())
            page.wait_for_selector("body[data-ready='1']", timeout=30_000)
            yield {"page": page, "errors": errors, "requests": requests, "index": index, "run": tiny_run}
        finally:
            browser.close()


def marker(run: Path, step: str) -> dict[str, Any]:
    return json.loads((run / "steps" / f"{step}.json").read_text())["outputs"]


def last_iteration(run: Path) -> int:
    return max(int(p.stem.split("_")[1]) for p in (run / "steps").glob("filter_*.json"))


def wait_media(page: Any) -> tuple[list[list[Any]], list[list[Any]]]:
    page.wait_for_function("() => [...document.querySelectorAll('audio')].every(a => a.readyState >= 1 || a.error)",
                           timeout=60_000)
    page.wait_for_function("() => [...document.images].every(i => i.complete)", timeout=60_000)
    audio = page.evaluate("() => [...document.querySelectorAll('audio')].map(a => [a.getAttribute('src'), a.duration, a.error && a.error.code])")
    images = page.evaluate("() => [...document.images].map(i => [i.getAttribute('src'), i.naturalWidth])")
    return audio, images


def test_every_player_and_image_loads_without_errors(browser_page):
    page, run = browser_page["page"], browser_page["run"]
    iterations = page.eval_on_selector_all("#iteration-select option", "els => els.map(e => e.value)")
    assert len(iterations) == last_iteration(run) + 1
    for value in iterations:
        page.select_option("#iteration-select", value)
        audio, images = wait_media(page)
        assert audio, f"iteration {value}: no players"
        bad = [a for a in audio if a[2] is not None or not (isinstance(a[1], (int, float)) and np.isfinite(a[1]) and a[1] > 0)]
        assert not bad, f"iteration {value}: players without a known duration: {bad[:5]}"
        assert all(0 < a[1] <= 4.0 + 1e-3 for a in audio)
        assert images and all(w > 0 for _, w in images), [i for i in images if i[1] <= 0]
    assert browser_page["errors"] == []
    # nothing left the page's folder: every request is a file under review/ (or a data: URL)
    review = browser_page["index"].parent.as_uri()
    assert all(u.startswith(review) or u.startswith("data:") for u in browser_page["requests"]), browser_page["requests"][:5]


def test_sorting_the_table_changes_its_first_row(browser_page):
    from pipelines.filters.table import read_candidates

    page, run = browser_page["page"], browser_page["run"]
    page.select_option("#iteration-select", str(last_iteration(run)))
    table = read_candidates(marker(run, f"filter_{last_iteration(run)}")["candidates_table"])
    first = page.get_attribute("#candidate-table tbody tr", "data-id")
    assert first == table["candidate_id"][0]
    for column in ("clap_target", "pc_target", "judge_overall", "true_sdr_db"):
        values = np.asarray(table[column], dtype=np.float64)
        expected = table["candidate_id"][int(np.nanargmin(values))]  # ascending; ties keep table order
        if expected != first:
            break
    page.click(f"#candidate-table th[data-key='{column}']")
    after = page.get_attribute("#candidate-table tbody tr", "data-id")
    assert after != first and after == expected, (column, first, after, expected)
    page.click(f"#candidate-table th[data-key='{column}']")  # again: descending
    assert page.get_attribute("#candidate-table tbody tr", "data-id") == table["candidate_id"][int(np.nanargmax(values))]
    assert browser_page["errors"] == []


def test_table_filters_and_links_each_row_to_its_lineage(browser_page):
    from pipelines.filters.table import read_candidates

    page, run = browser_page["page"], browser_page["run"]
    k = last_iteration(run)
    page.select_option("#iteration-select", str(k))
    table = read_candidates(marker(run, f"filter_{k}")["candidates_table"])
    rows = "#candidate-table tbody tr"
    assert page.locator(rows).count() == len(table["candidate_id"])
    page.select_option("#table-keep", "dropped")
    assert sorted(page.eval_on_selector_all(rows, "els => els.map(e => e.dataset.id)")) == \
        sorted(table["candidate_id"][~np.asarray(table["keep"], dtype=bool)])
    page.select_option("#table-keep", "all")
    label = table["label"][0]
    page.fill("#table-search", label)
    assert page.locator(rows).count() == int(np.sum(table["label"] == label)) > 0
    page.fill("#table-search", "")
    # the row's lineage link opens the scene, the separator checkpoint hash and the thresholds it was held against
    cid = table["candidate_id"][1]
    page.click(f"#candidate-table tr[data-id='{cid}'] a")
    panel = page.locator("#lineage")
    assert panel.is_visible()
    text = panel.inner_text()
    assert cid in text and table["scene_id"][1] in text and marker(run, f"separator_{k}")["checkpoint_hash"] in text
    assert all(r.column in text for r in rules_of(marker(run, f"filter_{k}")["thresholds"]))
    scene_href = page.get_attribute("#lineage a", "href")
    assert (browser_page["index"].parent / scene_href).resolve() == Path(table["scene_path"][1]).resolve()
    page.click("#lineage-close")
    assert not panel.is_visible()
    assert browser_page["errors"] == []


def kept_counts(run: Path, k: int, overrides: dict[str, float]) -> tuple[int, int]:
    """(ITT, SST) kept tracks of filter_k with some thresholds moved, computed from the Parquet table: every enabled
    rule (pipelines.filters.all_rules) must pass, tiers as pipelines/filters/remix.py, training scenes only."""
    from engine.data_steps import scene_rows
    from pipelines.filters.table import read_candidates

    stats = marker(run, f"filter_{k}")
    table = read_candidates(stats["candidates_table"])
    keep = np.ones(len(table["candidate_id"]), dtype=bool)
    for rule in rules_of(stats["thresholds"]):
        if rule.enabled:
            keep &= replace(rule, threshold=overrides.get(rule.name, rule.threshold)).passes(table[rule.column])
    worst = np.minimum(np.asarray(table["re_sdr_db"], dtype=np.float64), np.asarray(table["re_sisdr_db"], dtype=np.float64))
    itt = overrides.get("remix", stats["thresholds"]["itt_min_db"])
    sst = stats["thresholds"]["sst_min_db"]
    train = {r["clip_id"] for r in scene_rows(marker(run, "corpus")["scenes"], ["train"])}
    keep &= np.array([s in train for s in table["scene_id"]])
    return int(np.sum(keep & (worst > itt))), int(np.sum(keep & (worst > sst)))


def test_threshold_slider_changes_the_kept_count_to_the_parquet_count(browser_page):
    from pipelines.filters.table import read_candidates

    page, run = browser_page["page"], browser_page["run"]
    k = last_iteration(run)
    page.select_option("#iteration-select", str(k))
    stats = marker(run, f"filter_{k}")
    # at the run's thresholds the page agrees with the filter step's own counts
    assert int(page.inner_text("#x-itt-n")) == stats["kept_itt"] == kept_counts(run, k, {})[0]
    assert int(page.inner_text("#x-sst-n")) == stats["kept_sst"]
    assert stats["kept_itt"] > 1, "the loosened tiny run should keep several candidates"
    # drag clap_target's threshold to the median score of the kept tracks: about half of them drop
    table = read_candidates(stats["candidates_table"])
    kept = np.asarray(table["keep"], dtype=bool)
    target = float(np.median(np.asarray(table["clap_target"], dtype=np.float64)[kept]))
    value = page.evaluate("""([id, v]) => { const s = document.getElementById(id); s.value = v;
        s.dispatchEvent(new Event('input', {bubbles: true})); return parseFloat(s.value); }""", ["x-slider-clap_target", target])
    expected = kept_counts(run, k, {"clap_target": value})
    assert expected[0] != stats["kept_itt"]
    assert (int(page.inner_text("#x-itt-n")), int(page.inner_text("#x-sst-n"))) == expected
    # the keyboard moves it too: End = the slider's maximum, above every score, so nothing passes
    page.focus("#x-slider-clap_target")
    page.keyboard.press("End")
    top = float(page.input_value("#x-slider-clap_target"))
    assert int(page.inner_text("#x-itt-n")) == kept_counts(run, k, {"clap_target": top})[0] == 0
    # and the remix (ITT) slider moves the tier bound
    remix = page.evaluate("""() => { const s = document.getElementById('x-slider-remix'); s.value = s.max;
        s.dispatchEvent(new Event('input', {bubbles: true})); return parseFloat(s.value); }""")
    page.evaluate("""() => { const s = document.getElementById('x-slider-clap_target'); s.value = s.min;
        s.dispatchEvent(new Event('input', {bubbles: true})); }""")
    low = float(page.input_value("#x-slider-clap_target"))
    assert int(page.inner_text("#x-itt-n")) == kept_counts(run, k, {"clap_target": low, "remix": remix})[0]
    assert browser_page["errors"] == []


def test_reseparated_tracks_are_the_ones_the_filters_judged(tiny_run):
    """The page plays a dropped candidate's track re-separated from the run's separator: it must be the same audio
    the filter step scored (its true SDR against the audit stem matches the table's; kept ones match the stored
    FLAC)."""
    from engine.review.media import kept_tracks, reseparate
    from engine.review.run_data import load_run
    from models import metrics
    from storage.audio import load_audio

    run = load_run(tiny_run)
    it = run.iterations[-1]
    rows = [{k: (v[i].item() if hasattr(v[i], "item") else v[i]) for k, v in it.table.items()} for i in range(it.size)]
    audio_cfg = run.cfg.audio
    mixtures = {r["scene_id"]: load_audio(r["scene_path"], audio_cfg) for r in rows}
    made = reseparate(it.separator["checkpoint"], rows, mixtures, audio_cfg.sample_rate, run.cfg.pseudo_label.window_s,
                      run.cfg.pseudo_label.overlap_s)
    stored = kept_tracks(it.filter_root, {r["candidate_id"] for r in rows})
    assert stored, "the loosened tiny run stores kept tracks"
    for cid, track in stored.items():
        assert np.max(np.abs(made[cid] - track)) < 1e-4, cid
    from engine.data_steps import audit_stems

    stems = audit_stems(marker(tiny_run, "corpus")["audit"])
    checked = 0
    for r in rows:
        ref_path = stems.get(r["scene_id"], {}).get(r["label"])
        if ref_path is None or r.get("true_sdr_db") is None or not np.isfinite(r["true_sdr_db"]):
            continue
        ref = load_audio(ref_path, audio_cfg.model_copy(update={"allow_silent": True, "min_duration_s": 0.0}))
        m = min(len(ref), len(made[r["candidate_id"]]))
        if not np.any(ref[:m]):
            continue
        assert abs(float(metrics.sdr(made[r["candidate_id"]][:m], ref[:m])) - r["true_sdr_db"]) < 0.01, r["candidate_id"]
        checked += 1
    assert checked > 0


def test_cli_rebuilds_the_page_and_names_bad_directories(tiny_run, tmp_path):
    from click.testing import CliRunner

    from flows.cli import cli

    res = CliRunner().invoke(cli, ["review", str(tiny_run), "--per-filter", "1", "--seed", "2", "-q"])
    assert res.exit_code == 0, res.output
    index = Path(res.output.strip().splitlines()[-1])
    assert index == tiny_run / "review" / "index.html" and index.is_file()
    res = CliRunner().invoke(cli, ["review", str(tmp_path), "-q"])
    assert res.exit_code == 3 and "not a stemforge run directory" in res.output
    res = CliRunner().invoke(cli, ["review", str(tmp_path / "missing"), "-q"])
    assert res.exit_code == 2 and "no such run directory" in res.output
