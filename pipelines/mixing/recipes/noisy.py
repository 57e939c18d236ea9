"""Synthetic noisy music / speech / general sound (SAM Audio Sec. 4.1.2).

noisy_music:  a music clip (target) + a non-music clip from the general pool (noise).
noisy_speech: 1-2 speech clips summed (the speech target, speakers offset by the speech offset) + a non-speech clip.
noisy_sound:  pairing rule of SAM Audio: clean SFX + clean SFX, clean SFX + in-the-wild scene, or in-the-wild +
              in-the-wild, drawn with `noisy.sound_pairing` probabilities; without a scene pool (`--scenes`) every
              tuple is clean + clean. A wild clip's labels are all its event labels, so target and noise never share
              a class even when both are scenes.
The SNR (target loudness over noise loudness) is drawn from `noisy.snr_db` (default U[-15, 15] dB). The target is a
sub-mixture group, so with two speakers the SNR refers to their sum.
"""
from __future__ import annotations

import numpy as np

from pipelines.mixing.distributions import parse_dist
from pipelines.mixing.pool import UsageLedger
from pipelines.mixing.recipes.base import Draft, Recipe, component, place_full
from pipelines.mixing.spec import Group

DOMAINS = {
    "noisy_music": (("music",), ("sound", "speech")),
    "noisy_speech": (("speech",), ("sound", "music")),
    "noisy_sound": (("sound",), ("sound",)),
}


class NoisyRecipe(Recipe):
    def __init__(self, name, cfg, pool):
        self.snr = parse_dist(cfg.noisy.snr_db, "noisy.snr_db")
        self.speakers = parse_dist(cfg.noisy.speakers, "noisy.speakers")
        self.speech_offset = parse_dist(cfg.triplets.speech_offset_db, "triplets.speech_offset_db")
        self.target_domains, self.noise_domains = DOMAINS[name]
        super().__init__(name, cfg, pool)

    def check_pool(self) -> None:
        self.pool.require_classes(1, self.target_domains, self.name)
        self.pool.require_classes(1, self.noise_domains, self.name)
        if self.name == "noisy_sound":
            self.pool.require_classes(2, self.target_domains, self.name)

    def _pairing(self, rng: np.random.Generator) -> str:
        if self.name != "noisy_sound" or self.wild is None:
            return "clean+clean"
        names = sorted(self.cfg.noisy.sound_pairing)
        probs = np.array([self.cfg.noisy.sound_pairing[k] for k in names], dtype=np.float64)
        return names[int(rng.choice(len(names), p=probs / probs.sum()))]

    def plan_unit(self, rng: np.random.Generator, ledger: UsageLedger) -> list[Draft]:
        d = self.cfg.duration_s
        n_targets = 1
        if self.name == "noisy_speech":
            n_targets = max(1, min(int(round(self.speakers.sample(rng))), len(self.pool.classes_in(self.target_domains))))
        pairing = self._pairing(rng)
        target_pool = self.wild if pairing == "wild+wild" else self.pool
        noise_pool = self.pool if pairing == "clean+clean" else self.wild
        assert target_pool is not None and noise_pool is not None
        targets = target_pool.draw_distinct(rng, ledger, n_targets, None if pairing == "wild+wild" else self.target_domains)
        exclude = {label for e in targets for label in e.labels}
        noise = noise_pool.draw_distinct(rng, ledger, 1, None if pairing != "clean+clean" else self.noise_domains, exclude=exclude)[0]
        ref = float(self.ref_level.sample(rng))
        snr = float(self.snr.sample(rng))
        offsets = [0.0] + [float(self.speech_offset.sample(rng)) for _ in targets[1:]]
        comps = [component(e, "target", *place_full(e, rng, d), level_db=ref + off, group=0) for e, off in zip(targets, offsets)]
        comps.append(component(noise, "residual", *place_full(noise, rng, d), level_db=ref - snr))
        ledger.use([*targets, noise])
        group = Group(members=list(range(len(targets))), level_db=ref)
        return [Draft(comps, "extract", groups=[group], info={"ref_level_db": ref, "snr_db": snr, "speaker_offsets_db": offsets, "pairing": pairing})]
