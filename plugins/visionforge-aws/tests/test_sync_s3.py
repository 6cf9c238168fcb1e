"""The sync's S3 client tuning: timestamps parsed without dateutil, same values as botocore."""

from __future__ import annotations

from datetime import datetime, timezone

from botocore.utils import parse_timestamp
from hypothesis import given
from hypothesis import strategies as st

from visionforge_aws.sync_s3 import _config, fast_timestamp


@given(
    st.datetimes(
        min_value=datetime(1970, 1, 2),
        max_value=datetime(2999, 12, 31),
        timezones=st.just(timezone.utc),
    )
)
def test_iso_timestamps_parse_like_botocore(moment: datetime) -> None:
    millis = moment.replace(microsecond=moment.microsecond // 1000 * 1000)
    text = millis.strftime("%Y-%m-%dT%H:%M:%S.") + f"{millis.microsecond // 1000:03d}Z"
    assert fast_timestamp(text) == parse_timestamp(text) == millis


def test_other_timestamps_go_to_botocore() -> None:
    header = "Mon, 30 Nov 2026 18:31:33 GMT"  # GetObject's Last-Modified header
    assert fast_timestamp(header) == parse_timestamp(header)
    assert fast_timestamp(header).tzinfo is not None
    assert fast_timestamp(1_796_063_493) == parse_timestamp(1_796_063_493)  # type: ignore[arg-type]


def test_client_config_is_accepted_by_botocore() -> None:
    from botocore.config import Config

    config = Config(**_config(8))
    assert config.max_pool_connections == 8
    assert config.parameter_validation is False
    assert config.user_agent.startswith("visionforge-aws-sync/")
