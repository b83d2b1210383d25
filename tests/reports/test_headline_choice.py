"""The report's headline configuration is the search's choice (its objective on the validation split),
never the configuration that scored best on the test split."""
from __future__ import annotations

from types import SimpleNamespace

import pandas as pd

from reports.result import lead_final_group


def _group(name: str, rank: int, search_value: float, test_values: list[float]):
    runs = pd.DataFrame({"final_source_value": [search_value] * len(test_values), "final_metric": test_values,
                         "seed": range(10000, 10000 + len(test_values))})
    return name, rank, runs


def test_the_headline_is_the_best_on_validation_even_when_another_scores_higher_on_test():
    groups = [_group("simclr", 1, 0.55, [0.72, 0.71]), _group("byol", 1, 0.60, [0.50, 0.52]),
              _group("byol", 2, 0.59, [0.90, 0.91])]
    assert lead_final_group(SimpleNamespace(mode="max"), groups)[:2] == ("byol", 1)
    # for a metric to minimise, the lowest search value leads
    assert lead_final_group(SimpleNamespace(mode="min"), groups)[:2] == ("simclr", 1)
