"""What a sweep may select on, checked on a parsed space: trials evaluate on the test split only
when nothing is selected by their metric, and the final stage's seeds are new to the search."""
from __future__ import annotations

from sweep.space.registry import fail
from sweep.space.spec import SweepSpec
from trainer.config import TrainConfig


def check_selection(spec: SweepSpec) -> None:
    _check_test_split(spec)
    _check_final_seeds(spec)


def _check_test_split(spec: SweepSpec) -> None:
    """Trials may evaluate on the test split only in a sweep that selects nothing by their metric
    (a grid compared as it stands: no search, no early stopping, no final stage); a selection made on
    the test split would make it a second validation split and its figures optimistic."""
    searched = spec.search.get("eval_split")
    settings = {"base.eval_split": [spec.base.get("eval_split")], "grid.eval_split": spec.grid.get("eval_split", []),
                "search.eval_split": searched.values if searched else ()}
    where = next((key for key, values in settings.items() if "test" in values), None)
    if where is None:
        return
    selects = [what for what, on in (("a search", bool(spec.search)), (f"{spec.scheduler.name} scheduling",
               spec.scheduler.name != "fifo"), ("a final stage", bool(spec.final))) if on]
    if selects:
        listed = f"{', '.join(selects[:-1])} and {selects[-1]}" if len(selects) > 1 else selects[0]
        raise fail(spec.source, where,
                    "test is allowed only in a sweep that selects nothing by its metric (a grid with asha: false and "
                    f"final: false); this one has {listed}: evaluate its trials on val (a final stage "
                    "measures the selected configurations on the test split)")


def _check_final_seeds(spec: SweepSpec) -> None:
    """The final stage's seeds are new: no seed the search may train with (the base's, a grid's, a
    searched range's or choice's) is one of them, or its test figures would share a run's randomness
    with the selection."""
    if spec.final is None:
        return
    finals = spec.final.seed_values()
    searched = spec.search.get("seed")
    used = {"base.seed": [int(spec.base.get("seed", TrainConfig().seed))],
            "grid.seed": [int(v) for v in spec.grid.get("seed", [])]}
    if searched is not None:
        used["search.seed"] = ([int(v) for v in searched.values] if searched.kind == "choice"
                               else [s for s in finals if searched.low <= s <= searched.high])
    for where, seeds in used.items():
        common = sorted(set(seeds) & set(finals))
        if common:
            raise fail(spec.source, where,
                        f"seed {common[0]} is also a final-stage seed: the final stage trains on new seeds "
                        f"{finals[0]}-{finals[-1]}, so the search must use seeds outside them (below {finals[0]})")
