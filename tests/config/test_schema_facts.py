"""The JSON Schema and the API's facts (sparkspec.apifacts, reference sections 2 and 6) say the
same: an editor checking a spec against the schema accepts exactly the values the loader and
the planner work with. The schema is a file of its own (editors read it), so the two are
compared here rather than one made from the other."""

from __future__ import annotations

import json
from typing import Any

import pytest

from sparkspec import apifacts
from sparkspec.config.schema import schema_text

SCHEMA: dict[str, Any] = json.loads(schema_text())
DEFS = SCHEMA["$defs"]


@pytest.mark.parametrize("where", ["defaults", "scene"])
def test_generation_parameters_match_the_api_facts(where: str) -> None:
    props = DEFS[where]["properties"]
    assert tuple(props["resolution"]["enum"]) == apifacts.RESOLUTIONS
    assert tuple(props["ratio"]["enum"]) == apifacts.ALL_RATIOS
    assert (props["duration"]["minimum"], props["duration"]["maximum"]) == apifacts.DURATION_RANGE
    assert (props["frames"]["minimum"], props["frames"]["maximum"]) == apifacts.FRAMES_RANGE
    assert (props["seed"]["minimum"], props["seed"]["maximum"]) == apifacts.SEED_RANGE
    assert tuple(props["service_tier"]["enum"]) == apifacts.SERVICE_TIERS
    expires = props["execution_expires_after"]
    assert (expires["minimum"], expires["maximum"]) == apifacts.EXPIRES_RANGE


def test_provider_settings_match_the_api_facts() -> None:
    props = DEFS["provider"]["properties"]
    assert tuple(props["protocol"]["enum"]) == apifacts.PROTOCOLS
    assert tuple(props["service_tier"]["enum"]) == apifacts.SERVICE_TIERS
    expires = props["execution_expires_after"]
    assert (expires["minimum"], expires["maximum"]) == apifacts.EXPIRES_RANGE


def test_every_resolution_and_ratio_has_a_pixel_size() -> None:
    # The planner's token estimate and the local renderer's frame size come from this table.
    assert set(apifacts.PIXEL_SIZES) == set(apifacts.RESOLUTIONS)
    for sizes in apifacts.PIXEL_SIZES.values():
        assert tuple(sizes) == apifacts.RATIOS
