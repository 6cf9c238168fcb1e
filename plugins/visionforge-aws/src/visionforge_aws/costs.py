"""Cost of SageMaker training from the dated price table shipped in this package."""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Any

from visionforge.errors import ConfigError


@cache
def price_table() -> dict[str, Any]:
    """The table in ``prices.json``: date, source, region and on-demand $/hour by type."""
    text = resources.files("visionforge_aws").joinpath("prices.json").read_text()
    return dict(json.loads(text))


def hourly_price(instance_type: str) -> float:
    table = price_table()["on_demand_per_hour"]
    if instance_type not in table:
        raise ConfigError(
            f"runner.instance_type: no price for {instance_type} in the table of "
            f"{price_table()['date']} (known: {', '.join(sorted(table))})"
        )
    return float(table[instance_type])


@dataclass(frozen=True)
class Estimate:
    """The most a job can cost (it runs up to ``max_run``), on-demand and with spot."""

    instance_type: str
    instance_count: int
    hours: float
    on_demand: float
    spot: float | None
    table_date: str

    def describe(self) -> str:
        text = (
            f"{self.instance_count} x {self.instance_type} for up to {self.hours:g} h: "
            f"at most ${self.on_demand:,.2f} on-demand"
        )
        if self.spot is not None:
            text += f", about ${self.spot:,.2f} with spot (typical saving)"
        return text + f" (prices of {self.table_date}, us-east-1)"


def estimate(instance_type: str, instance_count: int, max_run_s: int, spot: bool) -> Estimate:
    price = hourly_price(instance_type)
    hours = max_run_s / 3600
    on_demand = price * hours * instance_count
    table = price_table()
    spot_cost = on_demand * (1 - float(table["spot_savings"])) if spot else None
    return Estimate(instance_type, instance_count, hours, on_demand, spot_cost, table["date"])


def billed_cost(job: dict[str, Any]) -> dict[str, Any] | None:
    """BillableTimeInSeconds x instance count x on-demand price of a finished job (managed
    spot's billable time already carries the discount); None before SageMaker reports it."""
    seconds = job.get("BillableTimeInSeconds")
    if seconds is None:
        return None
    resources_ = job["ResourceConfig"]
    count = int(resources_["InstanceCount"])
    price = hourly_price(resources_["InstanceType"])
    return {
        "billable_seconds": int(seconds),
        "instance_count": count,
        "usd_per_hour": price,
        "usd": round(int(seconds) * count * price / 3600, 4),
        "price_table": price_table()["date"],
        "spot": bool(job.get("EnableManagedSpotTraining")),
    }
