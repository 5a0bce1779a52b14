"""`up --distributed --replicas NAME=N,...`."""

import pytest

from mocktrade.launcher import parse_replicas


def test_replicas_per_service_and_job_and_a_job_left_to_a_flink_cluster():
    assert parse_replicas("marketdata=2, execution=0") == {"marketdata": 2, "execution": 0}
    assert parse_replicas("") == {}


@pytest.mark.parametrize("spec, names", [
    ("gateway=0", "gateway"),        # a service cannot be left out
    ("execution=-1", "execution"),
    ("execution=two", "execution"),
    ("matcher=2", "matcher"),        # no such service or job
])
def test_bad_replicas_are_refused_naming_the_item(spec, names):
    with pytest.raises(ValueError, match=names):
        parse_replicas(spec)
