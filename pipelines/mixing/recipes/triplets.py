"""Fully-real stem triplets (SAM Audio Sec. 4.1): N stems -> N tuples, target = stem i, residual = the rest.

Two stem sources:
  * a stems folder (`folder/<song>/<stem>.wav`, pool entries carry `group`): stems are time-aligned (one common
    window) and keep their natural balance; non-target stems get a gain offset ~ +/-5 dB.
  * the clean pool (the demo corpus has no multitracks): a group is formed by drawing 2-4 clips of *distinct
    classes* from `triplets.group_domain` (music by default), each cut at its own window; the target sits at the
    reference loudness and each other stem at reference + offset. A group made only of speech clips is a
    two-speaker conversation and uses the +/-15 dB speech offset instead.
"""
from __future__ import annotations

import numpy as np

from pipelines.mixing.distributions import parse_dist
from pipelines.mixing.pool import PoolExhausted, UsageLedger
from pipelines.mixing.recipes.base import Draft, Recipe, component, place_full


class TripletRecipe(Recipe):
    def __init__(self, name, cfg, pool):
        t = cfg.triplets
        self.stems = parse_dist(t.stems_per_group, "triplets.stems_per_group")
        self.offset = parse_dist(t.stem_offset_db, "triplets.stem_offset_db")
        self.speech_offset = parse_dist(t.speech_offset_db, "triplets.speech_offset_db")
        self.domains = None if t.group_domain == "any" else (t.group_domain,)
        super().__init__(name, cfg, pool)
        self.songs = sorted(self.pool.groups)

    def check_pool(self) -> None:
        if not self.pool.groups:
            self.pool.require_classes(2, self.domains, self.name)

    def _offset(self, entries, rng: np.random.Generator) -> float:
        dist = self.speech_offset if all(e.domain == "speech" for e in entries) else self.offset
        return float(dist.sample(rng))

    def _song_unit(self, rng: np.random.Generator, ledger: UsageLedger) -> list[Draft]:
        usable = [s for s in self.songs if all(ledger.available(e) for e in self.pool.groups[s])]
        if not usable:
            raise PoolExhausted(f"{self.pool.name}: every song reached the reuse limit")
        entries = self.pool.groups[usable[int(rng.integers(len(usable)))]]
        d = self.cfg.duration_s
        common = min(e.duration_s for e in entries)
        start = float(rng.uniform(0.0, max(0.0, common - d)))
        length = min(d, common)
        drafts = []
        for j in range(len(entries)):
            offsets = [0.0 if i == j else self._offset(entries, rng) for i in range(len(entries))]
            comps = [component(e, "target" if i == j else "residual", start, 0.0, length, gain_db=offsets[i]) for i, e in enumerate(entries)]
            drafts.append(Draft(comps, "extract", info={"song": entries[0].group, "offsets_db": offsets}))
        ledger.use(entries)
        return drafts

    def plan_unit(self, rng: np.random.Generator, ledger: UsageLedger) -> list[Draft]:
        if self.songs:
            return self._song_unit(rng, ledger)
        d = self.cfg.duration_s
        n = max(2, min(int(round(self.stems.sample(rng))), len(self.pool.classes_in(self.domains))))
        entries = self.pool.draw_distinct(rng, ledger, n, self.domains)
        placements = [place_full(e, rng, d) for e in entries]
        drafts = []
        for j in range(n):
            ref = float(self.ref_level.sample(rng))
            offsets = [0.0 if i == j else self._offset(entries, rng) for i in range(n)]
            comps = [component(e, "target" if i == j else "residual", *placements[i], level_db=ref + offsets[i]) for i, e in enumerate(entries)]
            drafts.append(Draft(comps, "extract", info={"ref_level_db": ref, "offsets_db": offsets}))
        ledger.use(entries)
        return drafts
