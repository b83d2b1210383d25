"""Ray Tune: where a sweep's trials run.

    ray_setup.py        Ray started locally (loopback only, its own session) or joined, and each trial's resources
    machine.py          this machine's CPUs and GPUs, checked before Ray starts
    trainable.py        the trainables: where a trial is started and reports each epoch
    standin.py          the stand-in trainable: a synthetic learning curve at a fixed rate (run --simulate, benchmarks)
    parts.py            the space's searcher and scheduler as Ray objects, with the concurrency rule
    algorithms.py       our subclasses of Ray's ASHA, PBT and Optuna search
    mlflow_callback.py  each trial's results to MLflow (through sweep/tracking)
    console.py          the console's view of a running sweep
    baselines.py        raw-pixel and untrained-encoder baselines, as a Ray task
    driver.py           the driver's signal handling while Tune runs
"""
