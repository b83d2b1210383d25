"""MLflow: where every record of a sweep goes. No Ray here.

    store.py     the tracking URI (absolute, secrets masked), a client, the store's pre-flight check
    journal.py   the local journal each record is written to before it is sent, and its sender
    writers.py   a sweep's journalled writer, found by its parent run; `sync`
    runs.py      the sweep's parent run (space, versions, state) and its baselines
    encoders.py  trained encoders logged to MLflow and exported back
    secrets.py   passwords and tokens masked in anything printed or stored
"""
