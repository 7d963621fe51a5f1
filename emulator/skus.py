"""The GPU SKUs Azure ML managed online endpoints accept, as the emulator's quota oracle knows them.

Kept apart from the planner's table (``tasks/plan/skus.py``) on purpose: the emulator stands in for
Azure, so it must not share a mistake with the code it checks. ``tests/test_skus_agree.py`` keeps the
two tables in step. ``cores`` is the vCPU count Azure's regional quota counts.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Sku:
    name: str
    gpu_model: str
    cores: int


SKUS: dict[str, Sku] = {
    s.name.lower(): s
    for s in (
        Sku("Standard_NC24ads_A100_v4", "A100", 24),
        Sku("Standard_NC48ads_A100_v4", "A100", 48),
        Sku("Standard_NC96ads_A100_v4", "A100", 96),
        Sku("Standard_ND96asr_v4", "A100", 96),
        Sku("Standard_ND96amsr_A100_v4", "A100", 96),
        Sku("Standard_NC40ads_H100_v5", "H100", 40),
        Sku("Standard_NC80adis_H100_v5", "H100", 80),
        Sku("Standard_ND96is_H100_v5", "H100", 96),
        Sku("Standard_ND96isr_H100_v5", "H100", 96),
    )
}


def find_sku(name: str) -> Sku | None:
    """Azure matches SKU names case-insensitively."""
    return SKUS.get(name.lower())
