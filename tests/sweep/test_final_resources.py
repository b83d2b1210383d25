"""How the final stage's runs share the CPUs (sweep.runner.shared_final_resources)."""
from __future__ import annotations

from sweep.final import shared_final_resources

ONE_CPU = {"cpu": 1.0, "gpu": 0.0}


def test_a_partial_last_wave_on_cpus_becomes_one_wave_sharing_the_same_cpus():
    resources, at_once = shared_final_resources(ONE_CPU, 2, 3, cpus=2)  # the main job: 3 seeds on 2 cores
    assert at_once == 3 and resources == {"cpu": 0.6666, "gpu": 0.0}
    assert 3 * resources["cpu"] <= 2  # Ray can place all three
    resources, at_once = shared_final_resources({"cpu": 2.0, "gpu": 0.0}, 4, 5, cpus=8)
    assert at_once == 5 and 5 * resources["cpu"] <= 8


def test_whole_waves_gpus_a_users_limit_and_many_runs_stay_as_they_are():
    assert shared_final_resources(ONE_CPU, 2, 2, cpus=2) == (ONE_CPU, 2)  # all fit already
    assert shared_final_resources(ONE_CPU, 2, 4, cpus=2) == (ONE_CPU, 2)  # two whole waves: nothing idles
    assert shared_final_resources(ONE_CPU, 2, 9, cpus=2) == (ONE_CPU, 2)  # 9 processes at once: too many
    assert shared_final_resources(ONE_CPU, 1, 3, cpus=2) == (ONE_CPU, 1)  # --max-concurrent 1
    gpu = {"cpu": 1.0, "gpu": 1.0}
    assert shared_final_resources(gpu, 2, 3, cpus=2) == (gpu, 2)  # a GPU is not shared this way
