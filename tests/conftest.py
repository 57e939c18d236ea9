"""Test-wide environment: offline model hubs, sane CPU threading on 2 shared cores, quiet telemetry."""
from __future__ import annotations

import os

# Must be set before transformers / huggingface_hub are imported anywhere.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")

# Test fixtures (toy sources, toy shard factories) import as top-level modules from tests/fixtures: on sys.path for
# this process and on PYTHONPATH for the processes it starts (Ray workers build sample factories by module name).
import sys  # noqa: E402
from pathlib import Path  # noqa: E402

FIXTURES = str(Path(__file__).resolve().parent / "fixtures")
if FIXTURES not in sys.path:
    sys.path.insert(0, FIXTURES)
if FIXTURES not in os.environ.get("PYTHONPATH", "").split(os.pathsep):
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (FIXTURES, os.environ.get("PYTHONPATH")) if p)

import numpy as np  # noqa: E402
import pytest  # noqa: E402


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(1234)


@pytest.fixture(scope="session")
def ray_local(tmp_path_factory: pytest.TempPathFactory):
    """One local Ray instance for the whole test session: 2 CPUs, 1 *logical* GPU (so `num_gpus` placement can be
    tested on this CPU machine), a bounded object store, no dashboard. Tests that need their own cluster (two
    nodes, `ray start`) start it themselves and stop it by PID; never call `ray stop`, which stops every Ray
    process on the machine."""
    import ray

    if ray.is_initialized():
        yield ray
        return
    ray.init(num_cpus=2, num_gpus=1, include_dashboard=False, log_to_driver=False,
             object_store_memory=200 * 1024 * 1024, configure_logging=False,
             _temp_dir=str(tmp_path_factory.mktemp("ray")))
    try:
        yield ray
    finally:
        ray.shutdown()
