"""The planner's SKU table and the emulator's quota oracle are kept apart on purpose (the emulator must
not share the planner's mistakes); this keeps them describing the same Azure."""

from __future__ import annotations

from emulator.skus import SKUS as EMULATOR_SKUS
from tasks.plan.skus import GPU_SKUS as PLANNER_SKUS


def test_both_tables_know_the_same_skus_with_the_same_gpus_and_cores():
    assert set(EMULATOR_SKUS) == set(PLANNER_SKUS)
    for key, planner in PLANNER_SKUS.items():
        emulated = EMULATOR_SKUS[key]
        assert (emulated.name, emulated.gpu_model, emulated.cores) == (planner.name, planner.gpu_model, planner.cores)
