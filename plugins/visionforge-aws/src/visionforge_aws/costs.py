"""Cost of SageMaker and EC2 training from the dated price table shipped in this package
(EC2 spot: the current DescribeSpotPriceHistory price when EC2 answers)."""

from __future__ import annotations

import json
import statistics
from dataclasses import dataclass
from datetime import datetime, timezone
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


HOURS_PER_MONTH = 730.0


def ec2_table() -> dict[str, Any]:
    """The ``ec2`` part of ``prices.json``: on-demand and typical spot $/hour, EBS $/GB-month."""
    return dict(price_table()["ec2"])


def ec2_on_demand(instance_type: str) -> float:
    table = ec2_table()
    prices = table["on_demand_per_hour"]
    if instance_type not in prices:
        raise ConfigError(
            f"runner.instance_type: no EC2 price for {instance_type} in the table of "
            f"{table['date']} (known: {', '.join(sorted(prices))})"
        )
    return float(prices[instance_type])


def current_spot_price(ec2: Any, instance_type: str) -> tuple[float, list[str]] | None:
    """The median over availability zones of the newest Linux spot price of
    ``instance_type`` and the zones asked; None when EC2 has none or cannot be reached."""
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        answer = ec2.describe_spot_price_history(  # from now: the price in force per zone
            InstanceTypes=[instance_type],
            ProductDescriptions=["Linux/UNIX"],
            StartTime=datetime.now(timezone.utc),
            MaxResults=100,
        )
    except (BotoCoreError, ClientError):
        return None
    newest: dict[str, tuple[Any, float]] = {}
    for entry in answer.get("SpotPriceHistory", []):
        zone, stamp, price = entry["AvailabilityZone"], entry["Timestamp"], entry["SpotPrice"]
        if zone not in newest or stamp > newest[zone][0]:
            newest[zone] = (stamp, float(price))
    if not newest:
        return None
    return statistics.median(p for _, p in newest.values()), sorted(newest)


@dataclass(frozen=True)
class Ec2Estimate:
    """What one EC2 instance costs per hour before launch: the instance (spot or on-demand)
    and its EBS volume, which is also paid while a spot instance is stopped."""

    instance_type: str
    on_demand_per_hour: float
    spot_per_hour: float | None
    spot_source: str | None
    ebs_per_hour: float
    volume_gb: int
    table_date: str

    @property
    def per_hour(self) -> float:
        """The instance price the run is billed at (spot when spot, else on-demand)."""
        return self.on_demand_per_hour if self.spot_per_hour is None else self.spot_per_hour

    def describe(self) -> str:
        text = f"{self.instance_type}: ${self.on_demand_per_hour:,.3f}/h on-demand"
        if self.spot_per_hour is not None:
            text += f", about ${self.spot_per_hour:,.3f}/h spot ({self.spot_source})"
        return text + (
            f"; EBS {self.volume_gb} GB ${self.ebs_per_hour * 24:,.2f}/day, also while "
            f"stopped (prices of {self.table_date}, us-east-1)"
        )

    def as_state(self) -> dict[str, Any]:
        return {
            "instance_type": self.instance_type,
            "on_demand_usd_per_hour": self.on_demand_per_hour,
            "spot_usd_per_hour": self.spot_per_hour,
            "spot_source": self.spot_source,
            "usd_per_hour": self.per_hour,
            "ebs_usd_per_hour": round(self.ebs_per_hour, 6),
            "volume_gb": self.volume_gb,
            "price_table": self.table_date,
        }


def ec2_estimate(instance_type: str, spot: bool, volume_gb: int, ec2: Any) -> Ec2Estimate:
    """The hourly cost of a run; spot from ``ec2``'s DescribeSpotPriceHistory when it answers,
    else the table's dated typical spot price."""
    table = ec2_table()
    on_demand = ec2_on_demand(instance_type)
    spot_price: float | None = None
    source: str | None = None
    if spot:
        quote = current_spot_price(ec2, instance_type)
        if quote is not None:
            spot_price, zones = quote
            source = f"DescribeSpotPriceHistory, median of {len(zones)} zones"
        else:
            spot_price = float(table["spot_estimate_per_hour"][instance_type])
            source = f"no spot price history; typical price of {table['date']}"
    ebs = volume_gb * float(table["ebs_gp3_per_gb_month"]) / HOURS_PER_MONTH
    return Ec2Estimate(instance_type, on_demand, spot_price, source, ebs, volume_gb, table["date"])


def ec2_billed_cost(
    instance_seconds: float, usd_per_hour: float, ebs_usd_per_hour: float, final: bool
) -> dict[str, Any]:
    """Instance-seconds x the hourly price the run was estimated at, and its EBS volume over
    the same time; ``final`` once the instance is terminated."""
    hours = instance_seconds / 3600
    return {
        "instance_seconds": int(instance_seconds),
        "usd_per_hour": usd_per_hour,
        "usd": round(hours * usd_per_hour, 4),
        "ebs_usd": round(hours * ebs_usd_per_hour, 4),
        "price_table": ec2_table()["date"],
        "final": final,
    }
