"""Fast listings: the one-pass parser reads what botocore reads, and ranges listed in parallel
from hints give the same listing whatever the hints (checked on SeaweedFS)."""

from __future__ import annotations

import asyncio
import bisect
import itertools
from typing import Any
from xml.etree import ElementTree
from xml.sax.saxutils import escape

import pytest
from aiobotocore.parsers import AioResponseParserFactory
from botocore.session import get_session
from hypothesis import given, settings
from hypothesis import strategies as st

from visionforge_aws import sync_listing
from visionforge_aws.sync_listing import ListingParserFactory, key_ranges
from visionforge_aws.sync_s3 import MANIFEST_NAME, S3, FileState, _session, fast_timestamp

S3_NS = "http://s3.amazonaws.com/doc/2006-03-01/"
XML_TEXT = st.text(
    st.characters(codec="utf-8", exclude_categories=("Cs", "Cc", "Cn")), min_size=1, max_size=12
)


@st.composite
def listing_xml(draw: st.DrawFn) -> bytes:
    """A ListObjectsV2 answer: entries with every scalar field, some with an Owner, a
    RestoreStatus or checksum algorithms (flattened lists), some fields missing, empty or
    repeated."""
    entries = []
    for _ in range(draw(st.integers(0, 6))):
        fields = [f"<Key>{escape(draw(XML_TEXT))}</Key>"]
        if draw(st.booleans()):
            fields.append("<LastModified>2026-11-30T18:31:33.000Z</LastModified>")
        if draw(st.booleans()):
            fields.append(f"<Size>{draw(st.integers(0, 10**13))}</Size>")
        fields.append(draw(st.sampled_from(["<ETag>&quot;a1&quot;</ETag>", "<ETag></ETag>", ""])))
        fields += ["<StorageClass>STANDARD</StorageClass>"] * draw(st.integers(0, 2))
        fields.append(draw(st.sampled_from(["", "<ChecksumType>FULL_OBJECT</ChecksumType>"])))
        fields += ["<ChecksumAlgorithm>CRC32</ChecksumAlgorithm>"] * draw(st.integers(0, 2))
        if draw(st.booleans()):
            fields.append("<Owner><ID>abc</ID><DisplayName>me</DisplayName></Owner>")
        if draw(st.booleans()):
            fields.append(
                "<RestoreStatus><IsRestoreInProgress>true</IsRestoreInProgress></RestoreStatus>"
            )
        order = draw(st.permutations(fields))
        entries.append("<Contents>" + "".join(order) + "</Contents>")
    truncated = draw(st.booleans())
    token = f"<NextContinuationToken>{escape(draw(XML_TEXT))}</NextContinuationToken>"
    prefixes = "".join(
        f"<CommonPrefixes><Prefix>{escape(p)}</Prefix></CommonPrefixes>"
        for p in draw(st.lists(XML_TEXT, max_size=2))
    )
    body = (
        f'<?xml version="1.0" encoding="UTF-8"?><ListBucketResult xmlns="{S3_NS}">'
        f"<Name>bucket</Name><Prefix>data/</Prefix><KeyCount>{len(entries)}</KeyCount>"
        f"<MaxKeys>1000</MaxKeys><IsTruncated>{str(truncated).lower()}</IsTruncated>"
        f"{token if truncated else ''}{''.join(entries)}{prefixes}</ListBucketResult>"
    )
    return body.encode()


@pytest.fixture(scope="module")
def list_output_shape() -> Any:
    return get_session().get_service_model("s3").operation_model("ListObjectsV2").output_shape


def parsed(parser: Any, body: bytes, shape: Any) -> Any:
    """``parser``'s reading of a 200 answer with ``body``."""
    response = {"body": body, "headers": {"x-amz-request-id": "r"}, "status_code": 200}
    return asyncio.run(parser.parse(response, shape))


def botocore_and_ours(body: bytes, shape: Any) -> tuple[Any, Any]:
    """``body`` read by botocore's REST-XML parser and by ours (both with the sync's
    timestamp parser)."""
    readings = []
    for factory in (AioResponseParserFactory(), ListingParserFactory()):
        factory.set_parser_defaults(timestamp_parser=fast_timestamp)
        readings.append(parsed(factory.create_parser("rest-xml"), body, shape))
    return readings[0], readings[1]


@settings(max_examples=300, deadline=None)
@given(body=listing_xml())
def test_one_pass_parser_reads_what_botocore_reads(body: bytes, list_output_shape: Any) -> None:
    generic, ours = botocore_and_ours(body, list_output_shape)
    assert plain(ours) == plain(generic)


def test_other_answers_with_lists_parse_as_botocore_parses_them() -> None:
    """DeleteObjects (``--delete``): booleans, two lists of structures, a missing field."""
    body = (
        f'<DeleteResult xmlns="{S3_NS}">'
        "<Deleted><Key>a</Key><DeleteMarker>true</DeleteMarker></Deleted>"
        "<Deleted><Key>b</Key><VersionId>v1</VersionId><DeleteMarker>false</DeleteMarker>"
        "</Deleted><Error><Key>c</Key><Code>AccessDenied</Code><Message>no</Message></Error>"
        "</DeleteResult>"
    ).encode()
    shape = get_session().get_service_model("s3").operation_model("DeleteObjects").output_shape
    generic, ours = botocore_and_ours(body, shape)
    assert ours == generic
    assert ours["Deleted"][0] == {"Key": "a", "DeleteMarker": True}
    assert ours["Errors"][0]["Code"] == "AccessDenied"


def plain(value: Any) -> Any:
    """Parsed output made comparable: botocore hands back a repeated scalar tag as the XML
    elements themselves (compared by identity), here their text."""
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [plain(v) for v in value]
    if isinstance(value, ElementTree.Element):
        return ("element", value.tag, value.text)
    return value


def test_plain_entries_are_read_in_one_pass_and_others_by_botocore(
    list_output_shape: Any,
) -> None:
    factory = _session().get_component("response_parser_factory")
    assert isinstance(factory, ListingParserFactory)  # the parsers the sync's client uses
    plain = "<Contents><Key>a.jpg</Key><Size>7</Size><ETag>&quot;x&quot;</ETag></Contents>"
    owned = "<Contents><Key>b.jpg</Key><Owner><ID>me</ID></Owner></Contents>"
    for entry, by_botocore in ((plain, False), (owned, True)):
        parser = factory.create_parser("rest-xml")
        shapes: list[str] = []
        generic = parser._parse_shape

        def spy(shape: Any, node: Any, generic: Any = generic, shapes: list[str] = shapes) -> Any:
            shapes.append(shape.name)
            return generic(shape, node)

        parser._parse_shape = spy
        body = f'<ListBucketResult xmlns="{S3_NS}"><IsTruncated>false</IsTruncated>{entry}'
        answer = parsed(parser, f"{body}</ListBucketResult>".encode(), list_output_shape)
        assert ("Object" in shapes) is by_botocore, shapes
        assert answer["Contents"][0]["Key"] in ("a.jpg", "b.jpg")


@given(
    hints=st.sets(st.text(max_size=4), max_size=40),
    keys=st.sets(st.text(max_size=4), max_size=40),
    per_range=st.integers(1, 5),
)
def test_key_ranges_split_the_key_space_into_consecutive_ranges(
    hints: set[str], keys: set[str], per_range: int
) -> None:
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(sync_listing, "KEYS_PER_RANGE", per_range)
        ranges = key_ranges(hints)
    assert ranges[0][0] is None and ranges[-1][1] is None
    assert all(a[1] == b[0] is not None for a, b in itertools.pairwise(ranges))
    for key in keys | hints:  # every key in exactly one range
        assert sum((a is None or a < key) and (b is None or key <= b) for a, b in ranges) == 1
    ordered = sorted(hints)
    for after, upto in ranges:  # each range holds at most per_range of the hints, and some
        lo = 0 if after is None else bisect.bisect_right(ordered, after)
        hi = len(ordered) if upto is None else bisect.bisect_right(ordered, upto)
        assert hi - lo <= per_range
        assert hi > lo or not hints


KEYS = [
    *(f"images/{i % 3}/img_{i:03d}.jpg" for i in range(34)),
    "images/é/straße.jpg",  # UTF-8 order: after every ASCII key of the folder
    "images/日本/猫.png",
    "notes/a b+c.txt",  # characters the listing URL-encodes
    "zz-last.json",
]


@pytest.fixture
def uploaded(s3_bucket: str, s3_server: Any) -> str:
    """``KEYS`` (with their size as content length) under s3_bucket/data, plus a folder
    placeholder and a sync manifest (neither is listed as a file)."""
    client = s3_server.client()
    bucket = s3_bucket.removeprefix("s3://")
    for i, key in enumerate(KEYS):
        client.put_object(Bucket=bucket, Key=f"data/{key}", Body=b"x" * i)
    client.put_object(Bucket=bucket, Key="data/images/", Body=b"")
    client.put_object(Bucket=bucket, Key=f"data/{MANIFEST_NAME}", Body=b"{}")
    client.put_object(Bucket=bucket, Key="data-other/outside.jpg", Body=b"x")
    return f"{s3_bucket}/data"


HINTS: dict[str, list[str] | None] = {
    "none": None,
    "exact": KEYS,
    "every third": KEYS[::3],
    "with strangers": [*KEYS, "images/0/zzz", "aaa", "images/é/a", "zzzz"],
    "strangers only": ["b", "images/1", "images/1/img_009.jpg~", "x", "\U0001f600"],
    "all before": ["!", "#"],
    "all after": ["\uffff", "\U0010ffff"],
}


@pytest.mark.parametrize("hint_set", list(HINTS))
def test_tree_lists_the_same_files_whatever_the_hints(
    uploaded: str, hint_set: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sync_listing, "PAGE_KEYS", 5)  # pages of 5: many pages per range
    monkeypatch.setattr(sync_listing, "KEYS_PER_RANGE", 4)
    hints = HINTS[hint_set]
    requests: list[dict[str, Any]] = []

    async def listed() -> dict[str, FileState]:
        async with S3(8) as s3:
            call = s3.fs._call_s3

            async def counted(method: str, **kwargs: Any) -> Any:
                requests.append(kwargs)
                return await call(method, **kwargs)

            s3.fs._call_s3 = counted

            async def expected() -> list[str]:
                return hints or []

            return await s3.tree(uploaded, None if hints is None else expected())

    files = asyncio.run(listed())
    assert {k: s.size for k, s in files.items()} == {k: i for i, k in enumerate(KEYS)}
    assert all(r["MaxKeys"] == 5 for r in requests)
    held = sorted([MANIFEST_NAME, "images/", *KEYS])  # what the bucket holds under data/
    if hint_set == "exact":  # the first page of 5, then one page per range of 4 hints
        ranges = key_ranges(k for k in KEYS if k > held[4])
        assert len(requests) == 1 + len(ranges), requests
    if hint_set == "none":  # page after page
        assert len(requests) == -(-len(held) // 5)
