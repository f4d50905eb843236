"""run_stream's argument checks (they fire before any namespace is touched)."""

from __future__ import annotations

import pytest

from testbed.errors import UsageError
from traffic.packets import build_templates, flows
from traffic.run import run_stream


def test_rejects_bad_requests() -> None:
    a = build_templates(flows(2, "198.18.0.1", "198.18.0.2"), stream_id=1)
    b = build_templates(flows(1, "198.18.0.1", "198.18.0.2"), stream_id=2)
    with pytest.raises(UsageError, match="no templates"):
        run_stream(("x", "w0"), ("y", None), [], count=1)
    with pytest.raises(UsageError, match="several streams"):
        run_stream(("x", "w0"), ("y", None), a + b, count=1)
    with pytest.raises(UsageError, match="paced"):
        run_stream(("x", "w0"), ("y", None), a, count=1, events=[("e", 0.1, lambda: None)])
    with pytest.raises(UsageError, match="interface"):
        run_stream(("x", None), ("y", None), a, count=1)
