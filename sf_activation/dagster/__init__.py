"""The Dagster layer: model files become assets, checks, jobs, schedules and sensors.

Nothing below this package imports dagster; the engine (`sf_activation.sync` and what it
calls) runs and is tested without it. `sf_activation.definitions` is the code location's
entry point; the models directory also loads as a Component (`component.py`).
"""
