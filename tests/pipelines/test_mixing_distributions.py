"""Distribution tuples: parsing, validation errors, bounds, and seeded determinism."""
from __future__ import annotations

import numpy as np
import pytest

from pipelines.mixing.config import MixingConfig
from pipelines.mixing.distributions import DistributionError, parse_dist


def test_forms_and_samples_stay_in_bounds() -> None:
    rng = np.random.default_rng(0)
    assert parse_dist(4.0).sample(rng) == 4.0
    assert parse_dist(["const", 2]).sample(rng) == 2
    u = parse_dist([-3, 10])
    assert u.kind == "uniform" and u.bounds == (-3, 10)
    draws = [u.sample(rng) for _ in range(500)]
    assert min(draws) >= -3 and max(draws) <= 10 and max(draws) - min(draws) > 10
    ints = {parse_dist(["randint", 2, 5]).sample(rng) for _ in range(300)}
    assert ints == {2, 3, 4, 5}
    assert {parse_dist(["choose", ["a", "b"]]).sample(rng) for _ in range(100)} == {"a", "b"}
    tn = [parse_dist(["truncnorm", 0, 10, -1, 1]).sample(rng) for _ in range(200)]
    assert all(-1 <= v <= 1 for v in tn)
    normals = np.array([parse_dist(["normal", 5, 0.5]).sample(rng) for _ in range(2000)])
    assert abs(normals.mean() - 5) < 0.05 and abs(normals.std() - 0.5) < 0.05


def test_same_seed_same_draws() -> None:
    d = parse_dist(["uniform", 0, 1])
    a = [d.sample(np.random.default_rng([7, 1])) for _ in range(3)]
    b = [d.sample(np.random.default_rng([7, 1])) for _ in range(3)]
    assert a == b


@pytest.mark.parametrize("bad, fragment", [
    (["uniform", 5, 1], "above upper bound"),
    (["gauss", 0, 1], "unknown distribution kind"),
    (["normal", 0], "takes 2 argument"),
    (["normal", 0, -1], "standard deviation"),
    (["choose", []], "non-empty list"),
    ([1, 2, 3], "bare list"),
    ("loud", "expected a number"),
    (["randint", 1.5, 3], "integers"),
])
def test_bad_tuples_are_named(bad, fragment) -> None:
    with pytest.raises(DistributionError, match=fragment):
        parse_dist(bad, "promptsep.snr_db")


def test_config_rejects_bad_distribution_with_key_path() -> None:
    with pytest.raises(ValueError, match="promptsep.num_events"):
        MixingConfig(promptsep={"num_events": ["randint", 1, 5]})
    with pytest.raises(ValueError, match="pos_only"):
        MixingConfig(queries={"pos_only": 0.5, "neg_only": 0.5, "pos_neg": 0.5})
    cfg = MixingConfig(promptsep={"snr_db": [-3, 10]})
    assert cfg.promptsep.snr_db == [-3, 10]
