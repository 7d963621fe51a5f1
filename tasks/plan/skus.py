"""Azure ML managed online endpoint GPU SKUs, as the settings check and the capacity planner read them.

Source: Azure ML's "managed online endpoints SKU list" and the Azure compute size pages.
``cores`` is the vCPU count that Azure's regional quota counts. The emulator keeps its own copy
(``emulator/skus.py``) so the two cannot share a mistake; ``tests/test_skus_agree.py`` compares them.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class GpuSku:
    name: str
    gpus: int
    gpu_memory_gb: int  # per GPU
    gpu_model: str
    cores: int

    @property
    def total_gpu_memory_gb(self) -> int:
        return self.gpus * self.gpu_memory_gb


GPU_SKUS: dict[str, GpuSku] = {
    s.name.lower(): s
    for s in (
        GpuSku("Standard_NC24ads_A100_v4", 1, 80, "A100", 24),
        GpuSku("Standard_NC48ads_A100_v4", 2, 80, "A100", 48),
        GpuSku("Standard_NC96ads_A100_v4", 4, 80, "A100", 96),
        GpuSku("Standard_ND96asr_v4", 8, 40, "A100", 96),
        GpuSku("Standard_ND96amsr_A100_v4", 8, 80, "A100", 96),
        GpuSku("Standard_NC40ads_H100_v5", 1, 94, "H100", 40),
        GpuSku("Standard_NC80adis_H100_v5", 2, 94, "H100", 80),
        GpuSku("Standard_ND96is_H100_v5", 8, 80, "H100", 96),
        GpuSku("Standard_ND96isr_H100_v5", 8, 80, "H100", 96),
    )
}


def find_sku(name: str) -> GpuSku | None:
    """Look a SKU up the way Azure does: case-insensitively."""
    return GPU_SKUS.get(name.lower())
