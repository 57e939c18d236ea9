"""Kill `stemforge run` anywhere, resume it, and compare its end state with an uninterrupted run (issue 15 item 1).

Shared by the CI test (tests/chaos/test_kill_anywhere.py) and the longer benchmark (bench/chaos.py).

How a kill is aimed:
- named points (engine/faults.py `STEMFORGE_FAULTS`): a step's start (`step:kill`), just before a file is renamed
  onto a final name (`rename@GLOB`: a shard's tar or index part while the store commits it, a checkpoint while it
  is saved), just after (`renamed@GLOB`: a step marker is published and Prefect has not yet moved the task run to
  Completed). Deterministic: the process SIGKILLs itself at that instruction.
- a wall-clock delay (seeded) after which the driver is SIGKILLed from outside: lands anywhere, including inside
  numpy/torch/pyarrow code and half-written files.
- a Ray worker (engine.backend=ray): after a seeded delay, the busy `ray::` worker process of the run is SIGKILLed
  (a lost worker; the engine retries the task), the driver lives on.

What must be the same as the uninterrupted run (`compare`), paths normalised (the run directories differ):
the candidates table of every filter (sorted by candidate_id), the bytes of every shard under `synthetic/` and
`iter*/tiers/`, report.json without the figures that describe the invocation rather than the result (`VOLATILE`),
the release in `final/` (weights via models.weights.weights_hash, evaluation.json, model_card.json). And: no temp
file anywhere, every shard store passes `verify_store`. After every kill, before the resume: every shard and
checkpoint under a final name reads whole (`final_names_intact`: a kill never leaves a truncated file there).
"""
from __future__ import annotations

import hashlib
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

ROOT = Path(__file__).resolve().parents[2]
STEMFORGE = str(Path(sys.executable).parent / "stemforge")
TINY = str(ROOT / "configs" / "tiny.yaml")
NAME = "chaos"  # the same run name in every output root: paths differ only by the root, which is normalised
# The tiny preset with more to lose: several shards per store (kills between shard commits of one store) and every
# candidate kept, so the tier stores hold shards too (their bytes are compared) and the retrain reads them.
SETS = ("shards.max_count=4", "filters.itt_min_db=-100", "filters.sst_min_db=0", "filters.pc_enabled=false",
        "filters.clap_target_enabled=false", "filters.silence_enabled=false", "engine.ray.dashboard_port=0",
        "engine.ray.num_cpus=2")
# report.json keys that describe the invocation, not the result: wall/CPU seconds per step and in all; the steps a
# resumed invocation found finished (by construction not those of an uninterrupted run); the Ray session (addresses,
# node ids) and where each scorer task ran (node, pid). Everything else is compared exactly, but for
# `VOLATILE_FILTER`: in `last_filter`, how the filter executed (`executor`: backend, actor layout, setup and wall
# seconds, batches computed vs found done by this invocation) and each stage's wall-clock figures.
VOLATILE = ("timings", "cpu_timings", "total_seconds", "resumed_steps", "ray", "scorer_tasks")
VOLATILE_STAGE = ("seconds", "rows_per_s", "audio_hours_per_s")
RUN_TIMEOUT_S = 420


@dataclass
class Kill:
    """One way to kill an invocation; `faults` may name several points (each fires once per run directory)."""

    label: str
    faults: str | None = None       # STEMFORGE_FAULTS
    frac: float | None = None       # SIGKILL the driver this far (0..1) into what is left of the run
    worker_frac: float | None = None  # SIGKILL a busy Ray worker this far in (the driver lives on)
    delay_s: float | None = None    # set by run_round from `frac` and the reference run's duration
    worker_s: float | None = None


@dataclass
class Invocation:
    label: str
    rc: int
    seconds: float
    killed: str  # "" when it ran to its end; else what killed it
    stderr_tail: str


@dataclass
class RoundResult:
    root: Path
    invocations: list[Invocation] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    compared: dict[str, int] = field(default_factory=dict)


# ---- processes ---------------------------------------------------------------------------------------------------

def _procs() -> Iterator[tuple[int, int, int, str]]:
    """(pid, ppid, session id, cmdline) of every process we can read."""
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
            cmd = Path(f"/proc/{entry}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2:].split()
        yield int(entry), int(fields[1]), int(fields[3]), cmd


def run_processes(leader: int, marker: str | None) -> list[tuple[int, str]]:
    """The processes a `stemforge run` started: its session (it runs as a session leader), their descendants, and
    anything whose command line names the run's own Ray temp dir (`marker`; Ray daemons may start their own
    session). Never anything else: other sessions' Ray clusters and the lead's runs stay untouched."""
    procs = list(_procs())
    mine = {pid for pid, _, sid, cmd in procs if sid == leader or pid == leader or (marker and marker in cmd)}
    grew = True
    while grew:
        more = {pid for pid, ppid, _, _ in procs if ppid in mine and pid not in mine}
        grew = bool(more)
        mine |= more
    return [(pid, cmd) for pid, _, _, cmd in procs if pid in mine and pid != os.getpid()]


def kill_run(leader: int, marker: str | None) -> int:
    """SIGKILL every process of the run (see run_processes); returns how many were alive."""
    alive = run_processes(leader, marker)
    for pid, _ in alive:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    return len(alive)


RAY_SYSTEM = ("ray::IDLE", "ray::DashboardAgent", "ray::RuntimeEnvAgent", "ray::PlacementGroupCleaner", "ray::_")


def busy_worker(leader: int, marker: str | None) -> int | None:
    """The newest Ray worker of the run that executes engine work (`ray::<task or actor>`; not an idle worker,
    an agent or one of Ray's own actors): the one doing what the run is doing right now."""
    workers = sorted(pid for pid, cmd in run_processes(leader, marker)
                     if cmd.startswith("ray::") and not cmd.startswith(RAY_SYSTEM))
    return workers[-1] if workers else None


def invoke(out: Path, backend: str, kill: Kill | None, log: Path) -> Invocation:
    """`stemforge run` on the chaos config as a user starts it (Prefect's ephemeral API on the user's
    PREFECT_HOME: a fresh home costs a minute of database set-up on a loaded machine; task results of this output
    root in its own `prefect-storage`), killed as `kill` says."""
    env = {k: v for k, v in os.environ.items() if k not in ("STEMFORGE_FAULTS", "PREFECT_API_URL")}
    env.update(PREFECT_LOCAL_STORAGE_PATH=str(out / "prefect-storage"), RAY_USAGE_STATS_ENABLED="0",
               OMP_WAIT_POLICY="PASSIVE")
    if kill and kill.faults:
        env["STEMFORGE_FAULTS"] = kill.faults
    ray_tmp = tempfile.mkdtemp(prefix="sfc-", dir="/tmp") if backend == "ray" else None  # short: socket path limit
    args = [STEMFORGE, "run", "--config", TINY, "--set", f"engine.backend={backend}",
            *(a for s in SETS for a in ("--set", s)), "--out", str(out), "--name", NAME]
    if ray_tmp:
        args += ["--set", f"engine.ray.temp_dir={ray_tmp}"]
    fired_before = fired(out / NAME, kill.faults or "") if kill else []
    t0 = time.monotonic()
    with open(log, "ab") as err:
        err.write(f"\n==== {kill.label if kill else 'to the end'}\n".encode())
        err.flush()
        proc = subprocess.Popen(args, env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=err,
                                stdin=subprocess.DEVNULL, start_new_session=True)
        events: list[str] = []
        try:
            deadline = t0 + RUN_TIMEOUT_S
            worker_at = t0 + kill.worker_s if kill and kill.worker_s is not None else None
            driver_at = t0 + kill.delay_s if kill and kill.delay_s is not None else None
            while proc.poll() is None:
                now = time.monotonic()
                if now > deadline:
                    events.append(f"timeout after {RUN_TIMEOUT_S} s")
                    proc.kill()
                    break
                if driver_at is not None and now >= driver_at:
                    proc.send_signal(signal.SIGKILL)
                    events.append(f"driver SIGKILLed after {now - t0:.1f} s")
                    driver_at = None
                if worker_at is not None and now >= worker_at:
                    pid = busy_worker(proc.pid, ray_tmp)
                    if pid is not None:
                        os.kill(pid, signal.SIGKILL)
                        events.append(f"Ray worker {pid} SIGKILLed after {now - t0:.1f} s")
                        worker_at = None
                time.sleep(0.05)
            proc.wait()
        finally:
            kill_run(proc.pid, ray_tmp)  # orphans of a killed driver: Prefect's temporary server, Ray daemons
            if ray_tmp:
                _remove_tree(Path(ray_tmp))
    if proc.returncode == -signal.SIGKILL and not any(e.startswith("driver") for e in events):
        events.append("at " + (" / ".join(p for p in fired(out / NAME, kill.faults or "") if p not in fired_before)
                               or "?"))
    killed = "; ".join(events)
    tail = log.read_text(errors="replace")[-3000:]
    return Invocation(kill.label if kill else "resume", proc.returncode, time.monotonic() - t0, killed, tail)


def fired(root: Path, faults: str) -> list[str]:
    """The points of `faults` (a STEMFORGE_FAULTS value) that have fired in the run at `root`."""
    from engine.faults import counter_path

    items = [item.split(":") for item in faults.split(",") if item]
    return [f[0] for f in items if counter_path(root, f[0], f[1] if len(f) > 1 else "oserror").is_file()]


def _last_line(text: str) -> str:
    lines = [ln for ln in text.splitlines() if ln.strip() and "Stopping temporary server" not in ln]
    return lines[-1][:300] if lines else ""


def _remove_tree(path: Path) -> None:
    import shutil

    shutil.rmtree(path, ignore_errors=True)


# ---- kill plans --------------------------------------------------------------------------------------------------

def named_points(ref: Path) -> dict[str, list[str]]:
    """The named kill points an uninterrupted run passes, by kind, as STEMFORGE_FAULTS items."""
    rel = lambda p: str(p.relative_to(ref))  # noqa: E731
    tars = sorted(ref.glob("synthetic/*/*.tar")) + sorted(ref.glob("iter*/tiers/*/*.tar"))
    commit = [f"rename@*/{NAME}/{rel(t)}:kill" for t in tars]  # tar complete under its temp name
    # tar published, its index part not yet
    commit += [f"rename@*/{NAME}/{rel(t.parent / 'index' / (t.stem + '.parquet'))}:kill" for t in tars]
    ckpts = sorted(p for p in ref.rglob("*.pt") if "review" not in p.parts)
    checkpoint = [f"rename@*/{NAME}/{rel(p)}:kill" for p in ckpts]  # saved under its temp name, not renamed yet
    markers = sorted((ref / "steps").glob("*.json"))
    prefect = [f"renamed@*/{NAME}/steps/{m.name}:kill" for m in markers]  # marker out, Prefect's Completed not yet
    steps = [f"{m.stem}:kill" for m in markers]
    return {"shard_commit": commit, "checkpoint": checkpoint, "prefect": prefect, "step": steps}


def plan_rounds(ref: Path, ref_seconds: float, rounds: int, seed: int,
                ray_rounds: int = 0) -> list[tuple[str, list[Kill]]]:
    """`rounds` rounds, each a named kill (the four kinds in turn, the point drawn with `seed`), then a wall-clock
    kill at a seeded fraction of what is left, then resumes to the end. The first `ray_rounds` run on Ray and kill a
    busy Ray worker instead of the driver's wall-clock kill; their named point is a Prefect transition of a step
    whose marker the driver writes (the file-system hook is installed where engine.faults is imported: surely in
    the driver, not necessarily in a Ray worker, so a point inside a worker's shard commit might never fire)."""
    RAY_EARLY = ("corpus", "synthetic", "separator_0")
    rng = random.Random(seed)
    points = named_points(ref)
    kinds = ["shard_commit", "checkpoint", "prefect", "step"]
    plan = []
    for r in range(rounds):
        backend = "ray" if r < ray_rounds else "inprocess"
        kind = kinds[r % len(kinds)] if backend == "inprocess" else "prefect"
        # on Ray: an early marker, so that the worker kill after it finds most of the run (and its workers) ahead
        choices = [p for p in points[kind] if backend == "inprocess" or any(f"/steps/{m}.json" in p for m in RAY_EARLY)]
        clock = Kill("wall clock", frac=round(rng.uniform(0.05, 0.95), 3))
        if backend == "ray":  # a worker, not the driver: the first busy one from a seeded moment on
            clock = Kill("Ray worker", worker_frac=round(rng.uniform(0.3, 0.7), 3))
        point = rng.choice(choices)
        plan.append((backend, [Kill(f"{kind}: {point}", faults=point), clock]))
    return plan


def _left(ref: Path, root: Path, ref_seconds: float, startup_s: float = 12.0) -> float:
    """Roughly how long the rest of a run takes: Prefect's (and Ray's) start-up plus the share of the reference
    run's steps that have no marker yet."""
    done = len(list((root / "steps").glob("*.json"))) / max(1, len(list((ref / "steps").glob("*.json"))))
    return startup_s + (1.0 - done) * max(0.0, ref_seconds - startup_s)


def run_round(base: Path, label: str, backend: str, kills: list[Kill], ref: Path | None, ref_seconds: float,
              max_resumes: int = 3) -> RoundResult:
    """One round in `base/work` (every round and the reference run at the same absolute path, since shards and
    checkpoints record their source paths; moved to `base/<label>` at the end): an invocation per kill, each
    carrying every named point of the round (each fires once, in the order the run reaches them, so the kills
    land in run order whatever order they were drawn in) and its own wall-clock and worker delays; after each
    kill, nothing under a final name may be truncated; then resumes until the run ends (a delay past the end of
    what was left, or a worker kill absorbed by a retry, simply lets that invocation finish)."""
    work = base / "work"
    _remove_tree(work)
    work.mkdir(parents=True)
    res = RoundResult(work / NAME)
    log = work / "invocations.log"
    faults = ",".join(k.faults for k in kills if k.faults) or None
    for kill in [*kills, *[None] * max_resumes]:
        if kill is None:
            kill = Kill("resume")
        kill.faults = faults
        if ref is not None:
            left = _left(ref, res.root, ref_seconds)
            kill.delay_s = round(kill.frac * left, 2) if kill.frac is not None else None
            kill.worker_s = round(kill.worker_frac * left, 2) if kill.worker_frac is not None else None
        inv = invoke(work, backend, kill, log)
        res.invocations.append(inv)
        if inv.rc == 0:
            break
        if inv.rc != -signal.SIGKILL and "Ray worker" not in inv.killed:
            res.problems.append(f"{kill.label}: exit {inv.rc} (not a kill): {inv.stderr_tail}")
            break
        if inv.rc != -signal.SIGKILL:  # the driver gave up on a lost worker: an interrupted run like any other
            inv.killed += f"; the driver then exited {inv.rc}: {_last_line(inv.stderr_tail)}"
        res.problems += [f"after {kill.label}: {p}" for p in final_names_intact(res.root)]
    else:
        res.problems.append(f"the run did not finish after {max_resumes} resumes: {res.invocations[-1].stderr_tail}")
    final = base / label
    _remove_tree(final)
    work.rename(final)
    res.root = final / NAME
    return res


def reference(base: Path, backend: str = "inprocess") -> tuple[Path, float]:
    """The uninterrupted run (at the rounds' path, moved to `base/ref-<backend>`) and its wall seconds. One per
    backend: Ray and in-process runs agree on every figure the report compares but not bit for bit on everything
    (thread counts differ between a Ray worker and the driver, so float reductions may too)."""
    res = run_round(base, f"ref-{backend}", backend, [], None, 0.0, max_resumes=1)
    if res.problems:
        raise RuntimeError(f"the uninterrupted run failed: {res.problems}")
    return res.root, res.invocations[-1].seconds


# ---- end state ---------------------------------------------------------------------------------------------------

def _normal(node: Any, root: str) -> Any:
    if isinstance(node, str):
        return node.replace(root, "<run>")
    if isinstance(node, dict):
        return {k: _normal(v, root) for k, v in node.items()}
    if isinstance(node, list):
        return [_normal(v, root) for v in node]
    return node


def _json(path: Path, root: Path, drop: tuple[str, ...] = ()) -> Any:
    data = json.loads(path.read_text())
    return _normal({k: v for k, v in data.items() if k not in drop} if isinstance(data, dict) else data, str(root))


def _diff(a: Any, b: Any, where: str, out: list[str], limit: int = 8) -> None:
    """Leaf paths where two JSON-like trees differ (first `limit`)."""
    if len(out) >= limit:
        return
    if isinstance(a, dict) and isinstance(b, dict):
        for k in sorted(set(a) | set(b)):
            _diff(a.get(k, "<missing>"), b.get(k, "<missing>"), f"{where}.{k}", out, limit)
    elif isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        for i, (x, y) in enumerate(zip(a, b)):
            _diff(x, y, f"{where}[{i}]", out, limit)
    elif json.dumps(a, sort_keys=True) != json.dumps(b, sort_keys=True):  # NaN == NaN here
        out.append(f"{where}: {str(a)[:120]} != {str(b)[:120]}")


def report_figures(root: Path) -> dict[str, Any]:
    """report.json without what describes the invocation (VOLATILE, VOLATILE_STAGE, the filter's executor)."""
    rep = _json(root / "report.json", root, VOLATILE)
    last = rep.get("last_filter") or {}
    last.pop("executor", None)
    for stage in last.get("stage_stats", []):
        for k in VOLATILE_STAGE:
            stage.pop(k, None)
    return rep


def _release_doc(root: Path, doc: str) -> Any:
    """A release document; in the model card without the checkpoints' file sha256: a separator checkpoint embeds
    its `saved_at` time and training `elapsed_s` (models/separator/checkpoint.py), so its bytes differ between any
    two runs; its weights are compared instead (`weights_hash`, also in the card)."""
    data = _json(root / "final" / doc, root)
    if doc == "model_card.json":
        for part in ("separator", "judge"):
            (data.get(part) or {}).pop("sha256", None)
    return data


def candidates(root: Path) -> dict[str, list[dict[str, Any]]]:
    """Every filter's candidates table, rows sorted by candidate_id, paths normalised."""
    import pyarrow.parquet as pq

    out = {}
    for table in sorted(root.glob("iter*/filter/table")):
        rows = [r for part in sorted(table.glob("*.parquet")) for r in pq.read_table(part).to_pylist()]
        out[str(table.relative_to(root))] = _normal(sorted(rows, key=lambda r: r["candidate_id"]), str(root))
    return out


def shard_files(root: Path) -> dict[str, Path]:
    return {str(p.relative_to(root)): p for p in [*root.glob("synthetic/*/*.tar"), *root.glob("iter*/tiers/*/*.tar")]
            if not p.name.startswith(".")}


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def temp_files(root: Path) -> list[str]:
    return sorted(str(Path(d, f).relative_to(root)) for d, _, files in os.walk(root) for f in files
                  if f.endswith(".tmp"))


def stores(root: Path) -> list[Path]:
    return sorted(p.parent for p in root.rglob("store.json"))


def final_names_intact(root: Path) -> list[str]:
    """Right after a kill: every shard under a final name reads to its end, every checkpoint under a final name
    loads. (A tar published a moment before its index part may exist; the next writer of its group removes it.)"""
    from models.weights import weights_hash
    from storage.shards.reader import iter_raw_samples

    problems = []
    for store in stores(root):
        for tar in sorted(store.glob("*.tar")):
            if tar.name.startswith("."):
                continue
            try:
                for _ in iter_raw_samples(str(tar), on_error="raise"):
                    pass
            except Exception as exc:  # noqa: BLE001 - reporting, not handling
                problems.append(f"{tar}: unreadable under its final name: {exc}")
    for ckpt in sorted(root.rglob("*.pt")):
        if ckpt.name.startswith("."):
            continue
        try:
            weights_hash(ckpt)
        except Exception as exc:  # noqa: BLE001
            problems.append(f"{ckpt}: does not load under its final name: {exc}")
    return problems


def compare(ref: Path, root: Path) -> tuple[list[str], dict[str, int]]:
    """Problems (empty = the same end state) and what was compared (counts, bytes)."""
    from models.weights import weights_hash
    from storage.shards.inspect import verify_store

    problems: list[str] = []
    n: dict[str, int] = {}
    if not (root / "report.json").is_file():
        return [f"{root}: no report.json (the run did not finish)"], n

    a, b = candidates(ref), candidates(root)
    n["candidate_tables"], n["candidate_rows"] = len(b), sum(len(v) for v in b.values())
    if a.keys() != b.keys():
        problems.append(f"candidate tables: {sorted(b)} != {sorted(a)}")
    for k in a.keys() & b.keys():
        d: list[str] = []
        _diff(a[k], b[k], k, d)
        problems += [f"candidates {x}" for x in d]

    sa, sb = shard_files(ref), shard_files(root)
    if sa.keys() != sb.keys():
        problems.append(f"shards: extra {sorted(sb.keys() - sa.keys())}, missing {sorted(sa.keys() - sb.keys())}")
    for k in sorted(sa.keys() & sb.keys()):
        if _sha(sa[k]) != _sha(sb[k]):
            problems.append(f"shard {k}: bytes differ")
    n["shards"], n["shard_bytes"] = len(sb), sum(p.stat().st_size for p in sb.values())

    d = []
    _diff(report_figures(ref), report_figures(root), "report", d, 20)
    problems += d
    n["report_leaves"] = sum(1 for _ in _leaves(report_figures(root)))

    fa, fb = sorted((ref / "final").glob("*.pt")), sorted((root / "final").glob("*.pt"))
    if [p.name for p in fa] != [p.name for p in fb]:
        problems.append(f"final checkpoints: {[p.name for p in fb]} != {[p.name for p in fa]}")
    for pa, pb in zip(fa, fb):
        if weights_hash(pa) != weights_hash(pb):
            problems.append(f"final/{pb.name}: weights differ")
    n["final_checkpoints"] = len(fb)
    for doc in ("evaluation.json", "model_card.json"):
        d = []
        _diff(_release_doc(ref, doc), _release_doc(root, doc), f"final/{doc}", d)
        problems += d

    temps = temp_files(root)
    if temps:
        problems.append(f"temporary files left: {temps}")
    n["stores_verified"] = 0
    for store in stores(root):
        if not list(store.glob("*.tar")):
            continue  # an empty store (no kept candidate): nothing to decode
        report = verify_store(store)
        n["stores_verified"] += 1
        if not report["ok"]:
            problems.append(f"shards verify {store}: {report['problems'][:3]}")
    return problems, n


def _leaves(node: Any) -> Iterator[Any]:
    if isinstance(node, dict):
        for v in node.values():
            yield from _leaves(v)
    elif isinstance(node, list):
        for v in node:
            yield from _leaves(v)
    else:
        yield node
