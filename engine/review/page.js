"use strict";
// The review page's behaviour: everything is computed here from the embedded JSON (no server, no network).
(function () {
  const D = JSON.parse(document.getElementById("review-data").textContent);
  const OPS = { ">": (a, b) => a > b, ">=": (a, b) => a >= b, "<": (a, b) => a < b, "<=": (a, b) => a <= b };
  const ROLES = [["mixture", "mixture"], ["track", "track"], ["residual", "residual"]];
  const CURVE_POINTS = 41;
  let IT = null;        // the iteration shown
  let ROW_OF = {};      // candidate_id -> row index in IT.table
  let X = null;         // explorer state: thresholds and switches
  const T = { key: null, dir: 1, limit: 100 };

  function h(tag, attrs, ...kids) {
    const el = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === null || v === undefined || v === false) continue;
      if (k === "text") el.textContent = v;
      else if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
      else el.setAttribute(k, v === true ? "" : v);
    }
    for (const kid of kids.flat()) {
      if (kid === null || kid === undefined) continue;
      el.append(kid instanceof Node ? kid : document.createTextNode(String(kid)));
    }
    return el;
  }
  const $ = (id) => document.getElementById(id);
  function fmt(v, digits) {
    if (v === null || v === undefined || (typeof v === "number" && !isFinite(v))) return "–";
    if (typeof v === "boolean") return v ? "yes" : "no";
    if (typeof v === "number") return Number.isInteger(v) && digits === undefined ? String(v) : v.toFixed(digits === undefined ? (Math.abs(v) < 10 ? 3 : 2) : digits);
    return String(v);
  }
  const col = (name) => IT.table.data[name] || null;
  const nRows = () => IT.table.rows;
  const lineageHref = (cid) => "#lineage/" + IT.iteration + "/" + encodeURIComponent(cid);

  // ---- the explorer ---------------------------------------------------------------------------------------------
  function passVec(rule, thr) {
    const v = col(rule.column), n = nRows(), out = new Uint8Array(n);
    if (!v) return out;  // a score that was never measured fails an enabled rule (`<rule>_missing`)
    const op = OPS[rule.op];
    for (let i = 0; i < n; i++) out[i] = v[i] !== null && op(v[i], thr) ? 1 : 0;
    return out;
  }
  function worst() {
    const a = col("re_sdr_db"), b = col("re_sisdr_db"), m = col("re_min_db"), n = nRows(), out = new Float64Array(n);
    for (let i = 0; i < n; i++) {
      if (a && b) out[i] = a[i] === null || b[i] === null ? NaN : Math.min(a[i], b[i]);
      else out[i] = m && m[i] !== null ? m[i] : NaN;
    }
    return out;
  }
  // tier rank per row as pipelines/filters/remix.py tier_of: 2 = sst, 1 = itt, 0 = none (strict bounds)
  function rankVec(itt, sst, remixOn, w) {
    const n = nRows(), out = new Uint8Array(n);
    for (let i = 0; i < n; i++) {
      let r = 0;
      if (isFinite(w[i])) r = w[i] > sst ? 2 : (w[i] > itt ? 1 : 0);
      out[i] = remixOn ? r : Math.max(r, 1);
    }
    return out;
  }
  function tally(keep, rank, tier) {
    const dur = col("duration_s"), sdr = col("true_sdr_db"), train = col("training");
    let n = 0, secs = 0, s = 0, k = 0;
    for (let i = 0; i < keep.length; i++) {
      if (!keep[i] || (train && !train[i]) || rank[i] < (tier === "sst" ? 2 : 1)) continue;
      n++; secs += dur && dur[i] !== null ? dur[i] : 0;
      if (sdr && sdr[i] !== null) { s += sdr[i]; k++; }
    }
    return { n: n, hours: secs / 3600, sdr: k ? s / k : null };
  }
  function state() {
    const pass = {};
    for (const r of IT.rules) pass[r.name] = X.on[r.name] ? passVec(r, X.thr[r.name]) : null;
    return pass;
  }
  function keepFrom(pass, skip, extra) {
    const keep = new Uint8Array(nRows()).fill(1);
    for (const r of IT.rules) {
      const p = r.name === skip ? extra : pass[r.name];
      if (!p) continue;
      for (let i = 0; i < keep.length; i++) keep[i] &= p[i];
    }
    return keep;
  }
  function remixRule() { return IT.rules.find((r) => r.name === "remix"); }
  function ittThr() { const r = remixRule(); return r ? X.thr.remix : IT.itt_min_db; }
  function remixOn() { const r = remixRule(); return r ? X.on.remix : IT.remix_enabled; }

  function curve(name, lo, hi, pass, w) {
    const pts = [];
    for (let k = 0; k < CURVE_POINTS; k++) {
      const t = lo + (hi - lo) * k / (CURVE_POINTS - 1);
      let res;
      if (name === "sst") res = tally(keepFrom(pass), rankVec(ittThr(), t, remixOn(), w), "sst");
      else {
        const rule = IT.rules.find((r) => r.name === name);
        const rank = name === "remix" ? rankVec(t, X.sst, true, w) : rankVec(ittThr(), X.sst, remixOn(), w);
        res = tally(keepFrom(pass, name, passVec(rule, t)), rank, "itt");
      }
      pts.push([t, res.n, res.sdr]);
    }
    return pts;
  }
  function drawCurve(svg, pts, lo, hi, current, configured) {
    const W = 220, H = 46, P = 2;
    svg.replaceChildren();
    const x = (t) => P + (W - 2 * P) * (hi > lo ? (t - lo) / (hi - lo) : 0.5);
    const nMax = Math.max(1, ...pts.map((p) => p[1]));
    const area = pts.map((p) => x(p[0]).toFixed(1) + "," + (H - P - (H - 2 * P) * p[1] / nMax).toFixed(1));
    const ns = "http://www.w3.org/2000/svg";
    const mk = (tag, attrs) => { const el = document.createElementNS(ns, tag); for (const k in attrs) el.setAttribute(k, attrs[k]); svg.append(el); return el; };
    mk("polygon", { points: x(lo).toFixed(1) + "," + (H - P) + " " + area.join(" ") + " " + x(hi).toFixed(1) + "," + (H - P), fill: "#d5d9e2" });
    const sd = pts.filter((p) => p[2] !== null);
    if (sd.length > 1) {
      const a = Math.min(...sd.map((p) => p[2])), b = Math.max(...sd.map((p) => p[2]));
      const y = (v) => H - P - (H - 2 * P) * (b > a ? (v - a) / (b - a) : 0.5);
      mk("polyline", { points: sd.map((p) => x(p[0]).toFixed(1) + "," + y(p[2]).toFixed(1)).join(" "), fill: "none", stroke: "#3658b8", "stroke-width": 1.5 });
      mk("title", {}).textContent = "mean true SDR of kept: " + a.toFixed(2) + " to " + b.toFixed(2) + " dB";
    }
    mk("line", { x1: x(configured), x2: x(configured), y1: 0, y2: H, stroke: "#555", "stroke-dasharray": "3,2" });
    mk("line", { x1: x(current), x2: x(current), y1: 0, y2: H, stroke: "#b3261e", "stroke-width": 1.5 });
  }
  function range(column, thr) {
    const v = (col(column) || []).filter((a) => a !== null && isFinite(a));
    let lo = Math.min(thr, ...v), hi = Math.max(thr, ...v);
    if (!(hi > lo)) { lo -= 1; hi += 1; }
    const pad = (hi - lo) * 0.02;
    return [lo - pad, hi + pad];
  }
  function explorerRows() {
    const rows = IT.rules.map((r) => ({ name: r.name, column: r.column, op: r.op, configured: r.threshold, toggle: true }));
    rows.splice(1, 0, { name: "sst", column: "re_min_db", op: ">", configured: IT.sst_min_db, toggle: false, label: "SST tier" });
    return rows;
  }
  function renderExplorer() {
    X = { thr: {}, on: {}, sst: IT.sst_min_db };
    for (const r of IT.rules) { X.thr[r.name] = r.threshold; X.on[r.name] = r.enabled; }
    const box = $("explorer-rules");
    box.replaceChildren();
    for (const r of explorerRows()) {
      const [lo, hi] = range(r.column, r.configured);
      const slider = h("input", { type: "range", id: "x-slider-" + r.name, min: lo, max: hi, step: (hi - lo) / 500, value: r.configured,
        "data-rule": r.name, "aria-label": r.name + " threshold" });
      const num = h("input", { type: "number", id: "x-value-" + r.name, step: "any", value: r.configured });
      const setThr = (v) => { if (r.name === "sst") X.sst = v; else X.thr[r.name] = v; };
      slider.addEventListener("input", () => { setThr(parseFloat(slider.value)); num.value = slider.value; updateExplorer(); });
      num.addEventListener("change", () => { const v = parseFloat(num.value); if (isFinite(v)) { setThr(v); slider.value = v; updateExplorer(); } });
      const toggle = r.toggle ? h("input", { type: "checkbox", id: "x-on-" + r.name, checked: X.on[r.name], title: "filter gates",
        onchange: (e) => { X.on[r.name] = e.target.checked; updateExplorer(); } }) : h("span", {});
      const svg = document.createElementNS("http://www.w3.org/2000/svg", "svg");
      svg.setAttribute("width", 220); svg.setAttribute("height", 46); svg.setAttribute("id", "x-curve-" + r.name);
      svg.dataset.lo = lo; svg.dataset.hi = hi; svg.dataset.configured = r.configured;
      box.append(h("div", { class: "xrule" }, toggle, h("span", { class: "name", text: r.label || r.name }),
        h("span", { class: "op", text: r.column + " " + r.op }), slider, num, svg));
    }
    updateExplorer();
  }
  function updateExplorer() {
    const pass = state(), w = worst();
    const rank = rankVec(ittThr(), X.sst, remixOn(), w);
    const keep = keepFrom(pass);
    const scale = IT.table.capped ? IT.table.rows_total / IT.table.rows : 1;
    const est = (n) => (scale === 1 ? String(n) : "≈" + Math.round(n * scale));
    const res = $("explorer-result");
    const hasSdr = (col("true_sdr_db") || []).some((v) => v !== null);
    res.replaceChildren(h("thead", {}, h("tr", {}, h("th", { text: "tier" }), h("th", { text: "kept tracks" }), h("th", { text: "hours" }),
      hasSdr ? h("th", { text: "mean true SDR of kept (dB)" }) : null)));
    const body = h("tbody", {});
    for (const tier of ["itt", "sst"]) {
      const t = tally(keep, rank, tier);
      body.append(h("tr", {}, h("td", { text: tier.toUpperCase() }), h("td", { id: "x-" + tier + "-n", class: "num", text: est(t.n) }),
        h("td", { id: "x-" + tier + "-h", class: "num", text: (t.hours * scale).toFixed(4) }),
        hasSdr ? h("td", { id: "x-" + tier + "-sdr", class: "num", text: fmt(t.sdr, 2) }) : null));
    }
    res.append(body);
    for (const r of explorerRows()) {
      const svg = $("x-curve-" + r.name);
      const lo = +svg.dataset.lo, hi = +svg.dataset.hi;
      drawCurve(svg, curve(r.name, lo, hi, pass, w), lo, hi, r.name === "sst" ? X.sst : X.thr[r.name], +svg.dataset.configured);
    }
  }

  // ---- sampled candidates ---------------------------------------------------------------------------------------
  function cell(v) { return h("td", { class: typeof v === "number" ? "num" : null, text: fmt(v) }); }
  function scoreTable(i) {
    const rows = IT.rules.map((r) => {
      const v = col(r.column) ? col(r.column)[i] : null;
      const ok = v !== null && OPS[r.op](v, r.threshold);
      return h("tr", {}, h("td", { text: r.name + (r.enabled ? "" : " (off)") }), cell(v), h("td", { text: r.op + " " + fmt(r.threshold) }),
        h("td", { class: ok ? "pass" : "fail", text: ok ? "pass" : (v === null ? "missing" : "fail") }));
    });
    const extra = [["re_sdr_db", "Re-SDR (scene)"], ["re_sisdr_db", "Re-SISDR (scene)"], ["true_sdr_db", "true SDR (stems)"]]
      .filter(([c]) => col(c) && col(c)[i] !== null)
      .map(([c, label]) => h("tr", {}, h("td", { text: label }), cell(col(c)[i]), h("td", { text: "" }), h("td", { text: "" })));
    return h("table", { class: "compact" }, h("thead", {}, h("tr", {}, ["score", "value", "threshold", ""].map((t) => h("th", { text: t })))),
      h("tbody", {}, rows, extra));
  }
  function card(s) {
    const i = ROW_OF[s.candidate_id], m = IT.media[s.candidate_id] || {};
    const get = (c) => (col(c) ? col(c)[i] : null);
    const keep = get("keep"), tier = get("tier") || "none";
    const players = ROLES.map(([role, label]) => m[role] ? h("div", { class: "player" },
      h("span", { text: label }), h("img", { src: m[role].image, alt: label + " spectrogram", width: 192, height: 64 }),
      h("audio", { controls: true, preload: "metadata", src: m[role].audio })) : null);
    return h("div", { class: "card " + s.side },
      h("div", { class: "head" }, h("b", { text: s.candidate_id }), h("span", { text: get("label") || "" }),
        h("span", { class: "badge " + (s.side === "kept" ? "ok" : "bad"), text: s.side + " by " + s.rule }),
        h("span", { class: "badge " + (keep ? "ok" : "bad"), text: keep ? "kept overall" : "dropped overall" }),
        h("span", { class: "badge", text: "tier " + tier }),
        get("true_sdr_db") !== null ? h("span", { class: "badge", text: "true SDR " + fmt(get("true_sdr_db"), 2) + " dB" }) : null,
        h("a", { href: lineageHref(s.candidate_id), text: "lineage" })),
      h("div", { class: "query", text: "“" + (get("positive_text") || "") + "”" + (get("negative_text") ? " not “" + get("negative_text") + "”" : "")
        + " · " + (get("query_mode") || "") + ", gain " + fmt(get("gain_db"), 1) + " dB · excerpt " + fmt(m.start_s, 1) + "–"
        + fmt((m.start_s || 0) + (m.seconds || 0), 1) + " s (" + (m.source || "") + ")" }),
      h("div", { class: "query", text: "reasons: " + (get("reasons") || "none") }),
      h("div", { class: "body" }, scoreTable(i), h("div", { class: "players" }, players)));
  }
  function renderSamples() {
    const box = $("sample-groups");
    box.replaceChildren();
    $("samples-note").textContent = "Per filter, up to " + D.settings.per_filter + " kept and " + D.settings.per_filter
      + " dropped candidates among the nearest to its threshold (seed " + D.settings.seed + "); excerpts of "
      + D.settings.excerpt_s + " s (" + D.settings.audio_format.toUpperCase() + ") around the loudest part of the track. "
      + "Kept tracks are the stored ones; dropped ones are re-separated with this iteration's separator.";
    for (const r of IT.rules) {
      const mine = IT.samples.filter((s) => s.rule === r.name);
      const side = (name) => h("div", { class: "side" }, h("h4", { text: name === "kept" ? "kept (passes)" : "dropped (fails)" }),
        mine.filter((s) => s.side === name).map(card), mine.some((s) => s.side === name) ? null : h("p", { class: "note", text: "none" }));
      box.append(h("div", { class: "group", id: "group-" + r.name },
        h("h3", { text: r.name + ": " + r.column + " " + r.op + " " + fmt(r.threshold) + (r.enabled ? "" : " (switched off: what it would do)") }),
        mine.length ? h("div", { class: "sides" }, side("kept"), side("dropped")) : h("p", { class: "note", text: "no candidate has this score" })));
    }
  }

  // ---- the candidates table -------------------------------------------------------------------------------------
  function tableColumns() {
    const scores = IT.rules.map((r) => r.column);
    const cols = ["candidate_id", "split", "label", "tier", "keep", ...scores, "re_sdr_db", "re_sisdr_db", "true_sdr_db", "duration_s", "reasons"];
    return cols.filter((c, k) => col(c) && cols.indexOf(c) === k);
  }
  function matches(i, text, keep, tier) {
    const k = col("keep"), t = col("tier");
    if (keep !== "all" && k && (keep === "kept") !== k[i]) return false;
    if (tier !== "all" && t) {
      const v = t[i] || "";
      if (tier === "none" ? v !== "" : tier === "itt" ? !(v === "itt" || v === "sst") : v !== tier) return false;
    }
    if (!text) return true;
    return ["candidate_id", "scene_id", "label", "reasons", "positive_text"].some((c) => col(c) && String(col(c)[i] || "").toLowerCase().includes(text));
  }
  function compare(a, b) {
    const v = col(T.key);
    const x = v[a], y = v[b];
    if (x === null || x === undefined) return (y === null || y === undefined) ? a - b : 1;  // missing values last
    if (y === null || y === undefined) return -1;
    if (x < y) return -T.dir; if (x > y) return T.dir;
    return a - b;
  }
  function renderTable() {
    const cols = tableColumns();
    const thr = {};
    for (const r of IT.rules) thr[r.column] = r;
    const head = h("tr", {}, h("th", { text: "" }), cols.map((c) => h("th", {
      "data-key": c, class: T.key === c ? (T.dir > 0 ? "sorted-asc" : "sorted-desc") : null, title: "sort by " + c,
      onclick: () => { T.dir = T.key === c ? -T.dir : 1; T.key = c; renderTable(); } }, c)));
    $("candidate-table").tHead.replaceChildren(head);
    const text = $("table-search").value.trim().toLowerCase(), keep = $("table-keep").value, tier = $("table-tier").value;
    let idx = [];
    for (let i = 0; i < nRows(); i++) if (matches(i, text, keep, tier)) idx.push(i);
    if (T.key) idx.sort(compare);
    const shown = idx.slice(0, T.limit);
    const body = $("candidate-table").tBodies[0];
    body.replaceChildren(...shown.map((i) => h("tr", { class: col("keep") && col("keep")[i] ? "is-kept" : null, "data-id": col("candidate_id")[i] },
      h("td", {}, h("a", { href: lineageHref(col("candidate_id")[i]), text: "lineage" })),
      cols.map((c) => {
        const v = col(c)[i], r = thr[c];
        const td = cell(v);
        if (r && r.enabled) td.classList.add(v !== null && OPS[r.op](v, r.threshold) ? "pass" : "fail");
        return td;
      }))));
    $("table-count").textContent = "showing " + shown.length + " of " + idx.length + " matching rows";
    const more = $("table-more");
    more.hidden = idx.length <= T.limit;
    more.textContent = "show " + Math.min(500, idx.length - T.limit) + " more";
    $("table-note").textContent = IT.table.capped
      ? "The table holds " + IT.table.rows + " of the iteration's " + IT.table.rows_total + " candidates (a seeded uniform sample that includes every candidate with players); explorer counts are scaled to the full table."
      : "All " + IT.table.rows_total + " candidates of this iteration; click a header to sort (again to reverse), a score is red where it fails an enabled filter.";
  }

  // ---- lineage --------------------------------------------------------------------------------------------------
  function showLineage() {
    const panel = $("lineage"), m = /^#lineage\/(\d+)\/(.+)$/.exec(location.hash);
    if (!m) { panel.hidden = true; return; }
    const k = D.iterations.findIndex((it) => it.iteration === +m[1]);
    if (k < 0) { panel.hidden = true; return; }
    if (D.iterations[k] !== IT) { $("iteration-select").value = k; show(k, true); }
    const cid = decodeURIComponent(m[2]), i = ROW_OF[cid];
    if (i === undefined) { panel.hidden = true; return; }
    const get = (c) => (col(c) ? col(c)[i] : null);
    const scene = IT.scenes[get("scene_id")] || {}, L = IT.lineage;
    const dl = h("dl", {});
    const add = (k2, v) => dl.append(h("dt", { text: k2 }), h("dd", {}, v));
    add("candidate", cid);
    add("iteration", String(IT.iteration) + " (filter step: " + L.filter_marker + ")");
    add("scene", scene.href ? h("a", { href: scene.href, text: get("scene_id") }) : get("scene_id"));
    add("scene split", scene.split || "–");
    add("query", "“" + (get("positive_text") || "") + "”" + (get("negative_text") ? " not “" + get("negative_text") + "”" : ""));
    add("variant", (get("query_mode") || "") + ", gain " + fmt(get("gain_db"), 1) + " dB");
    add("separator", (L.separator.checkpoint || "–") + " · hash " + (L.separator.checkpoint_hash || "–"));
    for (const [name, s] of Object.entries(L.scorers || {})) add("scorer " + name, "hash " + (s.checkpoint_hash || "–"));
    add("thresholds", IT.rules.map((r) => r.column + " " + r.op + " " + fmt(r.threshold) + (r.enabled ? "" : " (off)")).join("; ")
      + "; SST: Re-SDR and Re-SISDR > " + fmt(IT.sst_min_db));
    add("tier / kept", (get("tier") || "none") + " / " + fmt(get("keep")));
    add("reasons", get("reasons") || "none");
    add("table", L.table || "–");
    $("lineage-body").replaceChildren(h("h3", { text: "Lineage" }), dl);
    panel.hidden = false;
  }

  function show(k, keepHash) {
    IT = D.iterations[k];
    ROW_OF = {};
    (col("candidate_id") || []).forEach((cid, i) => { ROW_OF[cid] = i; });
    T.key = null; T.dir = 1; T.limit = 100;
    const s = IT.stats;
    $("iteration-summary").textContent = (s.candidates ?? IT.table.rows_total) + " candidates; kept ITT " + fmt(s.kept_itt)
      + ", SST " + fmt(s.kept_sst) + "; separator " + (IT.lineage.separator.checkpoint_hash || "–");
    renderExplorer(); renderSamples(); renderTable();
    if (!keepHash) showLineage();
  }

  function init() {
    const sel = $("iteration-select");
    D.iterations.forEach((it, k) => sel.append(h("option", { value: k, text: String(it.iteration) })));
    sel.value = D.iterations.length - 1;
    sel.addEventListener("change", () => show(+sel.value));
    for (const id of ["table-search", "table-keep", "table-tier"]) $(id).addEventListener("input", () => { T.limit = 100; renderTable(); });
    $("table-more").addEventListener("click", () => { T.limit += 500; renderTable(); });
    $("lineage-close").addEventListener("click", () => { location.hash = ""; showLineage(); });
    window.addEventListener("hashchange", showLineage);
    show(D.iterations.length - 1);
    document.body.dataset.ready = "1";
  }
  init();
})();
