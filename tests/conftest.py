# Shared test configuration: hypothesis profiles and the virtual clock used by loopback tests.
from __future__ import annotations

import os

import pytest
from hypothesis import HealthCheck, settings
from trio.testing import MockClock

# No wall-clock deadlines: this machine is shared and noisy, and tests never assert speed.
settings.register_profile(
    "default", deadline=None, suppress_health_check=[HealthCheck.too_slow], max_examples=200
)
settings.register_profile(
    "ci", deadline=None, suppress_health_check=[HealthCheck.too_slow], max_examples=300
)
settings.load_profile(
    os.environ.get("HYPOTHESIS_PROFILE", "ci" if os.environ.get("CI") else "default")
)


@pytest.fixture
def autojump_clock() -> MockClock:
    """Virtual time that jumps ahead whenever every task is idle.

    pytest-trio's own ``autojump_clock`` jumps after 0 s of real idleness. Our integration tests
    run the client and the simulator in one trio run over real loopback sockets, where a byte
    written by one side may take a few microseconds of kernel time to become readable by the
    other; jumping in that instant would fire a virtual deadline early. A 2 ms real-time cushion
    makes the jump wait until the kernel has delivered everything in flight. It is not a sleep:
    no test waits for wall-clock time to pass to observe a timing.
    """
    return MockClock(autojump_threshold=0.002)
