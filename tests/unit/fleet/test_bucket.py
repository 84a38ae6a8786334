"""The bucket's stream configuration (made on a real cluster in tests/integration/test_fleet_security.py)."""

from __future__ import annotations

import pytest
from nats.js import api

from portsentinel.fleet.bucket import bucket_config, differences


def test_bucket_refuses_rollups_and_keeps_one_value_per_key() -> None:
    cfg = bucket_config("portsentinel_bans", replicas=3, max_age=30 * 86400)
    assert cfg.name == "KV_portsentinel_bans" and cfg.subjects == ["$KV.portsentinel_bans.>"]
    assert cfg.allow_rollup_hdrs is False and cfg.max_msgs_per_subject == 1 and cfg.num_replicas == 3
    assert cfg.deny_delete is True and cfg.discard == api.DiscardPolicy.NEW and cfg.allow_direct is True
    assert cfg.max_age == 30 * 86400 and cfg.duplicate_window == 120
    assert cfg.max_msg_size is not None and 512 <= cfg.max_msg_size <= 1024
    assert bucket_config("b", replicas=1, max_age=60).duplicate_window == 60


@pytest.mark.parametrize(("replicas", "max_age"), [(0, 60.0), (6, 60.0), (3, 0.0), (3, -1.0)])
def test_bucket_bounds(replicas: int, max_age: float) -> None:
    with pytest.raises(ValueError):
        bucket_config("b", replicas=replicas, max_age=max_age)


def test_differences_name_what_an_existing_bucket_gets_wrong() -> None:
    ours = bucket_config("b", replicas=3, max_age=86400)
    theirs = bucket_config("b", replicas=1, max_age=86400)
    theirs.allow_rollup_hdrs = True
    assert differences(theirs, ours) == ["num_replicas", "allow_rollup_hdrs"]
    assert differences(ours, bucket_config("b", replicas=3, max_age=86400)) == []
