"""OpenSep multi-order mixtures (OpenSep Sec. 3.4).

Four single sources x1..x4 of distinct classes; y1 = mix(x1, x2) at SNR s1, y2 = mix(x3, x4) at SNR s2, and
z = mix(y1, y2) at SNR s3 (y1 and y2 are sub-mixture groups scaled jointly, so s1 and s2 survive the outer mix).
One unit yields several tuples from the same z: each single source as target, then each pair — the two
sub-mixtures (`pair_targets: submix`, as in the paper) or all six pairs (`all`).
"""
from __future__ import annotations

from itertools import combinations

import numpy as np

from pipelines.mixing.distributions import parse_dist
from pipelines.mixing.pool import UsageLedger
from pipelines.mixing.recipes.base import Draft, Recipe, component, place_full
from pipelines.mixing.spec import Group


class OpenSepRecipe(Recipe):
    def __init__(self, name, cfg, pool):
        self.snr = parse_dist(cfg.opensep.snr_db, "opensep.snr_db")
        super().__init__(name, cfg, pool)

    def check_pool(self) -> None:
        self.pool.require_classes(4, None, self.name)

    def target_sets(self) -> list[tuple[int, ...]]:
        pairs = [(0, 1), (2, 3)] if self.cfg.opensep.pair_targets == "submix" else list(combinations(range(4), 2))
        return [(i,) for i in range(4)] + pairs

    def plan_unit(self, rng: np.random.Generator, ledger: UsageLedger) -> list[Draft]:
        d = self.cfg.duration_s
        entries = self.pool.draw_distinct(rng, ledger, 4)
        ref = float(self.ref_level.sample(rng))
        s1, s2, s3 = (float(self.snr.sample(rng)) for _ in range(3))
        placements = [place_full(e, rng, d) for e in entries]
        levels = [ref, ref - s1, ref, ref - s2]
        groups = [Group([0, 1], ref), Group([2, 3], ref - s3)]
        drafts = []
        for targets in self.target_sets():
            comps = [component(e, "target" if i in targets else "residual", *placements[i], level_db=levels[i], group=i // 2)
                     for i, e in enumerate(entries)]
            drafts.append(Draft(comps, "extract", groups=[Group(list(g.members), g.level_db) for g in groups],
                                info={"ref_level_db": ref, "snr_db": [s1, s2, s3], "targets": list(targets)}))
        ledger.use(entries)
        return drafts
