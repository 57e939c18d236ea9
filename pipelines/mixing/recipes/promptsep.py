"""PromptSep simulation (PromptSep Sec. 3.1).

2-5 events of distinct classes; event 0 is the reference at the sampled reference loudness, event k >= 1 sits at
`ref - snr_k` with snr_k ~ U[-3, 10] dB (SNR of the reference over event k). A random non-empty proper subset is
*named* by the prompt: operator extract -> the named events are the target; operator remove -> they are the
residual and the target is the rest. Target and residual therefore never share a class.
"""
from __future__ import annotations

import numpy as np

from pipelines.mixing.distributions import parse_dist
from pipelines.mixing.pool import UsageLedger
from pipelines.mixing.recipes.base import Draft, Recipe, component, place_event


class PromptSepRecipe(Recipe):
    def __init__(self, name, cfg, pool):
        p = cfg.promptsep
        self.num_events = parse_dist(p.num_events, "promptsep.num_events")
        self.snr = parse_dist(p.snr_db, "promptsep.snr_db")
        self.event_seconds = parse_dist(p.event_seconds, "promptsep.event_seconds")
        super().__init__(name, cfg, pool)

    def check_pool(self) -> None:
        self.pool.require_classes(2, None, self.name)

    def plan_unit(self, rng: np.random.Generator, ledger: UsageLedger) -> list[Draft]:
        d = self.cfg.duration_s
        n = int(round(self.num_events.sample(rng)))
        n = max(2, min(n, len(self.pool.classes)))
        entries = self.pool.draw_distinct(rng, ledger, n)
        ref = float(self.ref_level.sample(rng))
        snrs = [0.0] + [float(self.snr.sample(rng)) for _ in range(n - 1)]
        placements = [place_event(e, rng, d, float(self.event_seconds.sample(rng))) for e in entries]
        k = int(rng.integers(1, n))  # size of the named subset, 1..n-1
        named = set(int(i) for i in rng.choice(n, size=k, replace=False))
        operator = "remove" if float(rng.random()) < self.cfg.promptsep.remove_prob else "extract"
        comps = []
        for i, (entry, (start, onset, length)) in enumerate(zip(entries, placements)):
            is_target = (i in named) == (operator == "extract")
            comps.append(component(entry, "target" if is_target else "residual", start, onset, length, level_db=ref - snrs[i]))
        ledger.use(entries)
        return [Draft(comps, operator, info={"ref_level_db": ref, "snr_db": snrs, "named": sorted(named)})]
