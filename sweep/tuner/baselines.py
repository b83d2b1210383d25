"""The sweep's baselines (raw pixels, the untrained encoder), measured as Ray tasks with a trial's
resources and logged on the sweep's parent run: on the search's split once, from the base
configuration; on the test split for each final-stage seed, with that seed's init."""
from __future__ import annotations

from dataclasses import dataclass

import ray
from ray.tune import Callback

from sweep.selection import FINAL_EVALUATION
from sweep.space import SweepSpec
from sweep.tracking.runs import client_for, log_baselines
from sweep.tracking.writers import DRIVER_TRACKING_URI
from trainer import TrainConfig
from trainer.baselines import SEED_DEPENDENT, baseline_accuracies


def _baselines_task(config: dict, raw_pixels: bool) -> dict[str, float]:
    return baseline_accuracies(TrainConfig.from_dict(config), raw_pixels=raw_pixels)


def _seed_part(baselines: dict[str, float]) -> dict[str, float]:
    return {k: v for k, v in baselines.items() if k.split("_probe")[0] in SEED_DEPENDENT}


@dataclass
class PendingBaselines:
    """Baseline tasks under way (start_baselines); collect() waits for them and logs them."""

    uri: str
    parent_run_id: str
    split: str
    seeds: list[int] | None
    todo: list[int | None]
    runs: list
    early: bool = False  # started in the search's last wave

    def collect(self) -> dict[str, float] | None:
        try:
            measured = ray.get(self.runs)
        except Exception as err:  # the sweep goes on; the report says the baselines are missing
            print(f"baselines on the {self.split} split could not be measured: {str(err).strip().splitlines()[-1]}",
                  flush=True)
            return None
        first = self.seeds[0] if self.seeds else None
        for seed, baselines in zip(self.todo, measured):
            seeded = _seed_part(baselines)
            plain = baselines if seed == first else {k: v for k, v in baselines.items() if k not in seeded}
            if plain:
                log_baselines(self.uri, self.parent_run_id, self.split, plain)
            if seed is not None:
                log_baselines(self.uri, self.parent_run_id, self.split, seeded, seed=seed)
        if self.early:
            print(f"baselines on the {self.split} split measured on the slot the search's last wave left idle",
                  flush=True)
        _print(self.split, self.todo, measured)
        return measured[0]


def start_baselines(spec: SweepSpec, uri: str, parent_run_id: str, resources: dict[str, float],
                    split: str, seeds: list[int] | None = None) -> PendingBaselines | None:
    """Start measuring the kNN (and linear probe, when the configuration fits one) of raw pixels and
    of the untrained encoder, on the base configuration's bank and queries (the final stage's for
    test). Without seeds: once, with the base's seed. With seeds (the final stage's): raw pixels once,
    and the untrained encoder for each seed's init (baseline.<what>.<split>.seed_<seed>), so that each
    final run is compared with the untrained encoder of its own seed; the first seed's are also the
    split's plain baseline.<what>.<split>. What a resumed sweep measured before is not measured again
    (None: nothing to measure)."""
    metrics = client_for(uri).get_run(parent_run_id).data.metrics
    config = spec.train_config({}).to_dict()
    if split == "test":
        config.update(FINAL_EVALUATION)
    wanted = [(seed, f"baseline.untrained.{split}.seed_{seed}") for seed in seeds] if seeds else [(None, None)]
    todo = [seed for seed, key in wanted if (key or f"baseline.raw_pixels.{split}") not in metrics]
    if not todo:
        return None
    need_raw = f"baseline.raw_pixels.{split}" not in metrics
    task = ray.remote(num_cpus=resources["cpu"], num_gpus=resources["gpu"], max_retries=0)(_baselines_task)
    runs = [task.remote(config if seed is None else {**config, "seed": seed}, need_raw and i == 0)
            for i, seed in enumerate(todo)]
    return PendingBaselines(uri, parent_run_id, split, seeds, todo, runs)


def measure_baselines(spec: SweepSpec, uri: str, parent_run_id: str, resources: dict[str, float],
                      split: str, seeds: list[int] | None = None) -> dict[str, float] | None:
    """start_baselines, then collect them: the first's baselines, or None."""
    pending = start_baselines(spec, uri, parent_run_id, resources, split, seeds)
    return pending.collect() if pending else None


# the final stage's test baselines a search started in its last wave, by parent run id (final.py takes them)
EARLY: dict[str, PendingBaselines] = {}


class FinalBaselinesInLastWave(Callback):
    """The final stage's test baselines depend on the base configuration and the final seeds, not on
    what the search finds: they start as soon as the search's last wave leaves a trial's slot idle
    (every trial created, fewer unfinished than run at once), on that slot, instead of after the
    search. Tune pickles its callbacks: the tracking URI, which may hold a token, is looked up."""

    def __init__(self, spec: SweepSpec, parent_run_id: str, resources: dict[str, float], concurrency: int):
        self.spec, self.parent_run_id, self.resources, self.concurrency = spec, parent_run_id, resources, concurrency
        self.started = False

    def on_trial_complete(self, iteration, trials, trial, **info):
        self._start_if_idle(trials)

    def on_trial_error(self, iteration, trials, trial, **info):
        self._start_if_idle(trials)

    def _start_if_idle(self, trials) -> None:
        if self.started or len(trials) < self.spec.total_trials:
            return
        if sum(t.status not in ("TERMINATED", "ERROR") for t in trials) >= self.concurrency:
            return
        self.started = True
        pending = start_baselines(self.spec, DRIVER_TRACKING_URI[self.parent_run_id], self.parent_run_id,
                                  self.resources, "test", self.spec.final.seed_values())
        if pending is not None:
            pending.early = True
            EARLY[self.parent_run_id] = pending


def _print(split: str, seeds: list, measured: list[dict[str, float]]) -> None:
    raw = next((b for b in measured if "raw_pixels" in b), None)
    queries = int(measured[0]["queries"])
    if raw:
        probe = f" (linear probe {raw['raw_pixels_probe']:.4f})" if "raw_pixels_probe" in raw else ""
        print(f"baselines on the {split} split ({queries} queries): kNN on raw pixels {raw['raw_pixels']:.4f}{probe}",
              flush=True)
    for seed, b in zip(seeds, measured):
        which = f"seed {seed}'s init" if seed is not None else "its init"
        probe = (f"; linear probe {b['untrained_probe']:.4f} and {b['untrained_bn_probe']:.4f}"
                 if "untrained_probe" in b else "")
        print(f"  the untrained encoder ({which}) on the {split} split: kNN {b['untrained']:.4f} "
              f"({b['untrained_bn']:.4f} with BatchNorm calibrated){probe}", flush=True)
