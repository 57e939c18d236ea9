"""Kill anywhere, same result (issue 15 item 1): `stemforge run` (the tiny preset, tests/chaos/harness.py SETS)
SIGKILLed at seeded points, resumed each time, ends in the state of an uninterrupted run.

One uninterrupted reference run, then one run directory (at the reference's absolute path: shards and
checkpoints record their source paths) killed and resumed ROUNDS times in a row, in-process backend (fast):
during a shard commit, during checkpoint writing and during a Prefect state transition (named points of
engine/faults.py, drawn with SEED among those the reference run passed; they fire in the order the run reaches
them), then once more by the wall clock at a seeded moment. After each kill nothing under a final name is truncated;
after the last resume the candidates tables, the shard bytes, the report figures, the release weights, evaluation
and model card are those of the reference run, no temp file is left and every store verifies (harness.compare;
the figures that describe an invocation rather than its result - timings, resumed steps, the Ray session, the
filter's executor, the separator checkpoint's file hash (it embeds its save time) - are excluded there, each with
its reason). A Ray worker kill is in bench/chaos.py (a local Ray
costs about a minute per invocation here).

About four tiny runs' work: ~3 min on two idle cores, longer on a loaded machine.
"""
from __future__ import annotations

import random
import signal

import pytest

import harness as h

SEED = 15
ROUNDS = 3  # named kills; plus one by the wall clock


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_killed_anywhere_and_resumed_ends_as_the_uninterrupted_run(tmp_path):
    ref, ref_s = h.reference(tmp_path)
    rng = random.Random(SEED)
    points = h.named_points(ref)
    # labelled by number: the points fire in the order the run reaches them, which `killed` reports
    kills = [h.Kill(f"named kill {n + 1}", faults=rng.choice(points[kind]))
             for n, kind in enumerate(("shard_commit", "checkpoint", "prefect"))]
    kills.append(h.Kill("wall clock", frac=round(rng.uniform(0.1, 0.9), 3)))

    res = h.run_round(tmp_path, "killed", "inprocess", kills, ref, ref_s)
    story = "\n".join(f"{i.label}: {i.killed or f'exit {i.rc}'} ({i.seconds:.0f} s)" for i in res.invocations)
    assert not res.problems, f"{story}\n" + "\n".join(res.problems)
    # each named point killed one invocation (in the order the run reached them), then the run finished
    assert all(i.rc == -signal.SIGKILL and i.killed.startswith("at ") for i in res.invocations[:ROUNDS]), story
    assert len(h.fired(res.root, kills[0].faults)) == ROUNDS and res.invocations[-1].rc == 0, story

    problems, compared = h.compare(ref, res.root)
    assert not problems, f"{story}\n" + "\n".join(problems)
    assert compared["shards"] >= 10 and compared["candidate_rows"] > 0 and compared["final_checkpoints"] == 2, compared
