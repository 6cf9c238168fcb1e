"""Listing a large prefix fast: pages fetched in parallel, entries parsed without per-field
dispatch.

ListObjectsV2 pages are sequential (each carries the next one's token), so a 4,197-object
prefix is five round trips one after the other. When the keys to expect are known (the sync
manifest's, or the other side's local files), :func:`key_ranges` cuts the key space at every
:data:`KEYS_PER_RANGE`-th of them, and each range is listed on its own from ``StartAfter``:
one page each when the expectation holds, more pages where it does not, so the result is the
same listing whatever the hints were.

Parsing, not the network, is most of a listing's time: botocore's generic XML parser walks its
shape model for every field of every entry (about 30 us per object). :class:`ListingParser`
keeps botocore's parser and its service model and only changes how the members of a list of
structures are read: scalar fields in one pass over the element's children, from a plan made
once per shape; an element with anything else in it (an ``Owner``, a ``RestoreStatus``, a
repeated tag) goes to botocore's own code, so the output is botocore's, field for field.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable
from typing import Any

from aiobotocore.parsers import PROTOCOL_PARSERS, AioResponseParserFactory, AioRestXMLParser

PAGE_KEYS = 1000
"""Keys per ListObjectsV2 page (S3's maximum)."""
KEYS_PER_RANGE = 900
"""Expected keys per listed range: one page, with room for keys the hints did not know."""

KeyRange = tuple[str | None, str | None]
"""``(after, upto)``: the keys ``k`` with ``after < k <= upto`` (``None``: unbounded)."""


def key_ranges(hints: Iterable[str]) -> list[KeyRange]:
    """Consecutive ranges covering every key, each holding at most :data:`KEYS_PER_RANGE` of
    ``hints`` (S3 orders keys by their UTF-8 bytes, which is Python's order of ``str``)."""
    keys = sorted(set(hints))
    cuts = keys[KEYS_PER_RANGE - 1 :: KEYS_PER_RANGE]
    if cuts and cuts[-1] == keys[-1]:
        cuts.pop()  # the last range would hold no hinted key
    return list(itertools.pairwise([None, *cuts, None]))


Converter = Callable[[str], Any]
Plan = dict[str, tuple[str, Converter]]
"""XML tag -> (member name, text converter) for a structure's scalar members."""


class ListingParser(AioRestXMLParser):
    """botocore's REST-XML parser, reading lists of flat structures in one pass."""

    def __init__(self, plans: dict[str, Plan | None], **defaults: Any) -> None:
        super().__init__(**defaults)
        self._plans = plans

    def _plan(self, shape: Any) -> Plan | None:
        """How to read ``shape``'s scalar members, or None when botocore's code must."""
        if shape.name not in self._plans:
            self._plans[shape.name] = self._make_plan(shape)
        return self._plans[shape.name]

    def _make_plan(self, shape: Any) -> Plan | None:
        if (
            shape.type_name != "structure"
            or shape.metadata.get("exception")
            or getattr(shape, "is_tagged_union", False)
        ):
            return None
        converters: dict[str, Converter] = {
            "string": str,
            "integer": int,
            "long": int,
            "boolean": lambda text: text == "true",
            "timestamp": self._timestamp_parser,
        }
        plan: Plan = {}
        for name, member in shape.members.items():
            if member.serialization.get("location") or member.serialization.get("xmlAttribute"):
                return None
            if member.type_name in converters:  # others: read by botocore where present
                tag = member.serialization.get("name") or name
                plan[tag] = (name, converters[member.type_name])
        return plan

    def _handle_list(self, shape: Any, node: Any) -> Any:
        plan = self._plan(shape.member)
        if plan is None:
            return super()._handle_list(shape, node)
        if shape.serialization.get("flattened") and not isinstance(node, list):
            node = [node]
        return [None if item is None else self._flat(shape.member, plan, item) for item in node]

    def _flat(self, shape: Any, plan: Plan, item: Any) -> Any:
        parsed: dict[str, Any] = {}
        for child in item:
            field = plan.get(child.tag.rpartition("}")[2])
            if field is None or field[0] in parsed:
                return self._parse_shape(shape, item)  # anything unusual: botocore's way
            parsed[field[0]] = field[1](child.text or "")
        return parsed


class ListingParserFactory(AioResponseParserFactory):
    """Makes :class:`ListingParser` for REST-XML (S3), botocore's parsers for the rest."""

    def __init__(self) -> None:
        super().__init__()
        self._plans: dict[str, Plan | None] = {}

    def create_parser(self, protocol_name: str) -> Any:
        if PROTOCOL_PARSERS[protocol_name] is AioRestXMLParser:
            return ListingParser(self._plans, **self._defaults)
        return super().create_parser(protocol_name)
