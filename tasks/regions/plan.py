"""The multi-region plan: which regions, in which waves, each with which settings. Pure functions.

Everything here is checked before any cloud call: a plan with a problem is refused whole (exit 2), one
line per problem, so a typo never becomes a half-shipped fleet.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Mapping
from typing import Any

from tasks.prefect_home import SECRET_WORDS
from tasks.settings import RegionTarget, Settings, check_azure_name, shown

WORKSPACE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{2,32}")
# Azure public-cloud region names (`az account list-locations`): a name outside this list is a typo.
AZURE_REGIONS = frozenset("""
australiacentral australiacentral2 australiaeast australiasoutheast austriaeast belgiumcentral brazilsouth
brazilsoutheast canadacentral canadaeast centralindia centralus chilecentral denmarkeast eastasia eastus eastus2
francecentral francesouth germanynorth germanywestcentral indonesiacentral israelcentral italynorth japaneast
japanwest jioindiacentral jioindiawest koreacentral koreasouth malaysiawest mexicocentral newzealandnorth
northcentralus northeurope norwayeast norwaywest polandcentral qatarcentral southafricanorth southafricawest
southcentralus southindia southeastasia spaincentral swedencentral swedensouth switzerlandnorth switzerlandwest
uaecentral uaenorth uksouth ukwest westcentralus westeurope westindia westus westus2 westus3
""".split())


def problems(s: Settings) -> list[str]:
    """Every reason the plan cannot run, one line each (empty: it can)."""
    if not s.regions:
        return ["R1_REGIONS: no regional targets (a JSON list of {region, workspace, ...})"]
    found: list[str] = []
    names = [t.region for t in s.regions]
    for region, count in Counter(names).items():
        if count > 1:
            found.append(f"R1_REGIONS: region {shown(region)} is listed {count} times (one endpoint per region)")
    for region in dict.fromkeys(names):
        if region not in AZURE_REGIONS:
            found.append(f"R1_REGIONS: {shown(region)} is not an Azure region")
        elif region not in s.allowed_regions:
            found.append(f"R1_REGIONS: {shown(region)} is not in R1_ALLOWED_REGIONS {s.allowed_regions}")
    for t in s.regions:
        if not WORKSPACE_NAME.fullmatch(t.workspace):
            found.append(f"R1_REGIONS: {t.region} workspace {shown(t.workspace)} is not a workspace name")
        if t.endpoint_name is not None:
            try:
                check_azure_name(t.endpoint_name)
            except ValueError as err:
                found.append(f"R1_REGIONS: {t.region} endpoint_name {err}")
    planned = [r.strip().lower() for wave in s.waves for r in wave]
    for region in dict.fromkeys(planned):
        if region not in names:
            found.append(f"R1_WAVES: {shown(region)} has no target in R1_REGIONS")
    for region, count in Counter(planned).items():
        if count > 1:
            found.append(f"R1_WAVES: {shown(region)} is in {count} waves")
    if s.waves:
        if any(not wave for wave in s.waves):
            found.append("R1_WAVES: a wave is empty")
        for region in dict.fromkeys(names):
            if region not in planned:
                found.append(f"R1_WAVES: {shown(region)} is in R1_REGIONS but in no wave")
    return found


def waves(s: Settings) -> list[list[RegionTarget]]:
    """The waves in order; without R1_WAVES the first target is the canary and the rest are one wave."""
    by_region = {t.region: t for t in s.regions}
    if s.waves:
        return [[by_region[r.strip().lower()] for r in wave] for wave in s.waves]
    return [w for w in ([s.regions[0]], list(s.regions[1:])) if w]


def overrides(s: Settings, t: RegionTarget) -> dict[str, Any]:
    """What a region's rollout changes in the shared settings, as ``R1_*`` names without the prefix
    (``autoscale__minimum``): the same keys become the run's environment and the parent's regional settings."""
    found: dict[str, Any] = {"region": t.region, "workspace": t.workspace,
                             "subscription_id": t.subscription_id or s.subscription_id,
                             "resource_group": t.resource_group or s.resource_group,
                             "endpoint_name": t.endpoint_name or s.endpoint_name,
                             "instance_type": t.instance_type, "instance_count": t.instance_count,
                             "autoscale__minimum": t.autoscale_minimum, "autoscale__maximum": t.autoscale_maximum}
    return {k: v for k, v in found.items() if v is not None}


def as_env(fields: dict[str, Any]) -> dict[str, str]:
    """``{"autoscale__minimum": 2}`` → ``{"R1_AUTOSCALE__MINIMUM": "2"}``: a regional run's job variables."""
    return {f"R1_{k.upper()}": str(v) for k, v in fields.items()}


def child_env(environ: Mapping[str, str], fields: dict[str, Any]) -> dict[str, str]:
    """The env job variable of a region's rollout run: the R1_* settings this run has (a worker elsewhere may
    lack them or differ), minus secret-looking ones (the UI shows job variables), plus the region's own."""
    shared = {k: v for k, v in environ.items()
              if k.startswith("R1_") and not any(word in k.upper() for word in SECRET_WORDS)}
    shared.pop("R1_REGIONS", None), shared.pop("R1_WAVES", None)
    return {**shared, **as_env(fields)}


def regional_settings(s: Settings, fields: dict[str, Any]) -> Settings:
    """The whole settings one region runs with, validated (an override that breaks something is seen here)."""
    data = s.model_dump(exclude={"regions", "waves"})
    for key, value in fields.items():
        *parents, leaf = key.split("__")
        node = data
        for parent in parents:
            node = node[parent]
        node[leaf] = value
    return type(s).model_validate(data)
