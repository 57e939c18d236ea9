"""Every structured error of the library survives pickling (Ray re-raises worker errors in the driver by pickle)."""
from __future__ import annotations

import pickle

import pytest

from models.clap.checkpoint import CheckpointError as ClapCheckpointError
from models.judge.checkpoint import CheckpointError as JudgeCheckpointError
from models.judge.human_ratings import RatingsError
from models.separator.checkpoint import CheckpointError as SeparatorCheckpointError
from models.separator.data import ShardDataError
from storage.audio import ERROR_KINDS, AudioError
from storage.configio import ConfigError
from storage.shards.reader import ShardReadError
from storage.shards.writer import SampleError

CASES = [
    (ClapCheckpointError, ("/x/clap.pt", "truncated")),
    (JudgeCheckpointError, ("/x/judge.pt", "wrong keys")),
    (SeparatorCheckpointError, ("/x/sep.pt", "wrong shapes")),
    (RatingsError, ("/x/ratings.csv", "missing column 'overall'")),
    (ShardDataError, ("/x/store", "shard store directory does not exist")),
    (AudioError, ("/x/a.wav", sorted(ERROR_KINDS)[0], "cannot decode")),
    (ConfigError, ("/x/c.yaml", [("engine.backend", "unknown value")])),
    (ShardReadError, ("/x/s.tar", "k.mix.flac", "corrupt member")),
    (SampleError, ("key-1", "member 'json' is not valid JSON")),
]


@pytest.mark.parametrize("cls,args", CASES, ids=[c.__module__ + "." + c.__name__ for c, _ in CASES])
def test_structured_errors_round_trip_through_pickle(cls, args) -> None:
    exc = cls(*args)
    back = pickle.loads(pickle.dumps(exc))
    assert type(back) is cls and str(back) == str(exc) and back.__dict__ == exc.__dict__
    assert str(args[0]) in str(back)  # still names the file / key
