"""A sweep trial refuses a batch larger than its training set (issue 28): the trial's own code,
called here without Ray, raises the ConfigError its failed run is tagged with."""
from __future__ import annotations

import pytest

from sweep.space import load_space
from tests.conftest import write_space
from trainer.config import ConfigError


def test_a_trial_refuses_a_batch_larger_than_its_training_set(tmp_path):
    import ray  # the trial's module is Ray's; nothing here starts it

    from sweep.tuner.trainable import train_byol  # imports Ray

    space = write_space(tmp_path, "big", base={"batch_size": 65536, "train_limit": 0, "device": "cpu"},
                        search={"base_lr": {"uniform": [0.1, 1.0]}}, num_samples=1)
    with pytest.raises(ConfigError, match="batch_size 65536 is larger than the training set .*1259 training images"):
        train_byol({"base_lr": 0.5}, load_space(str(space)))
    assert not ray.is_initialized()
