"""The sweep's baselines (raw pixels, the untrained encoder), measured once per split as a Ray task
with a trial's resources and logged on the sweep's parent run."""
from __future__ import annotations

import ray

from sweep.selection import FINAL_EVALUATION
from sweep.space import SweepSpec
from sweep.tracking.runs import client_for, log_baselines
from trainer import TrainConfig
from trainer.baselines import baseline_accuracies


def _baselines_task(config: dict) -> dict[str, float]:
    return baseline_accuracies(TrainConfig.from_dict(config))


def measure_baselines(spec: SweepSpec, uri: str, parent_run_id: str, resources: dict[str, float],
                      split: str) -> dict[str, float] | None:
    """Once per sweep and split: kNN (and linear probe, when the configuration fits one) of raw pixels
    and of the untrained encoder, on the base configuration's bank and queries (the final stage's for
    test), as a task with a trial's resources."""
    metrics = client_for(uri).get_run(parent_run_id).data.metrics
    if f"baseline.raw_pixels.{split}" in metrics:
        return None  # measured before this resume
    config = spec.train_config({}).to_dict()
    if split == "test":
        config.update(FINAL_EVALUATION)
    task = ray.remote(num_cpus=resources["cpu"], num_gpus=resources["gpu"], max_retries=0)(_baselines_task)
    try:
        baselines = ray.get(task.remote(config))
    except Exception as err:  # the search goes on; the report says the baselines are missing
        print(f"baselines on the {split} split could not be measured: {str(err).strip().splitlines()[-1]}", flush=True)
        return None
    log_baselines(uri, parent_run_id, split, baselines)
    probes = (f"; linear probe {baselines['raw_pixels_probe']:.4f}, {baselines['untrained_probe']:.4f} and "
              f"{baselines['untrained_bn_probe']:.4f}" if "raw_pixels_probe" in baselines else "")
    print(f"baselines on the {split} split ({int(baselines['queries'])} queries): kNN on raw pixels "
          f"{baselines['raw_pixels']:.4f}, on the untrained encoder {baselines['untrained']:.4f} "
          f"({baselines['untrained_bn']:.4f} with BatchNorm calibrated){probes}", flush=True)
    return baselines
