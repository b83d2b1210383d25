"""Ray Tune sweeps of the BYOL core, recorded in MLflow.

    space/      a YAML search space -> a validated SweepSpec (no Ray, no MLflow)
    tuner/      Ray: start-up, the trainable, schedulers and searchers, the MLflow callback, the console
    tracking/   MLflow: the store, the journal, the sweep's runs, encoders
    runner.py   the story of one sweep: search, final stage, summary (run, resume, finalize, sync)
    final.py    the final stage; selection.py: what it re-trains
    state.py    a sweep's folder and sweep.json; summary.py: its outcome and closing lines
    views.py    pictures of a policy's views (`byol-sweep views`, and the report's)
    sync.py     `sync`: what a journal still holds, sent
    cli.py      `byol-sweep`
"""
