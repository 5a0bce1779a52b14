"""`mocktrade up --distributed` on the real engines, as a new user sees its
console: a few lines, the banner (every status a state, never a response
body; the prices address is the marketdata service's), then one line per
state change. Its engines.env names the DynamoDB region."""

from __future__ import annotations

import os
import signal
import time

from .conftest import RunningPlatform


def test_the_console_is_the_banner_then_state_changes(real_engines, tmp_path) -> None:
    platform = RunningPlatform(tmp_path / "data", engines=real_engines).start()
    try:
        time.sleep(6)  # a few readiness rounds after the banner
        pid = platform.pid_of("feed")
        os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and "feed: ready" not in platform.log_path.read_text():
            time.sleep(0.5)
    finally:
        platform.stop()
    lines = platform.log_path.read_text(errors="replace").splitlines()
    assert not [line for line in lines if "HTTP Request" in line], "httpx request lines on the console"
    banner = lines.index(next(line for line in lines if line.startswith("mocktrade (distributed) on ")))
    assert banner <= 2, lines[:banner]  # starting the engines ..., starting N processes ...
    assert lines[banner + 1] == f"  prices:  ws://127.0.0.1:{platform.port + 1}/v1/marketdata"
    statuses = [line.split()[1:] for line in lines[banner + 3:] if line.startswith("  ") and
                not line.lstrip().startswith(("console:", "demo token"))]
    assert statuses and all(words[0] in ("ready", "not") for words in statuses), statuses
    assert not [line for line in lines if "<?xml" in line or "<Error>" in line]
    after = [line for line in lines[banner:] if not line.startswith("  ") and not line.startswith("mocktrade (")]
    # The killed feed: restarting, then (maybe not answering / not ready, then) ready; then "stopped".
    assert "feed: exited (-9); restarting" in after, after
    assert "feed: ready" in after, after
    assert len(after) <= 8, after
    assert after[-1].startswith("stopped")
    engines_env = (tmp_path / "data" / "engines.env").read_text()
    assert "MOCKTRADE_DYNAMODB_REGION=us-east-1" in engines_env
