"""A served worker keeps what it loaded at start out of the garbage collector's reach.

The imports and the app live as long as the process, so a full collection that walks
them finds nothing and pauses every request in flight while it looks (150 to 190 ms per
pause at 32 shoppers, `bench/results/ab-gc-freeze.json` for the A/B). Run in a fresh
interpreter: freezing the test process itself would keep its garbage for good.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

SCRIPT = """
import gc, json
from widget_store.cli import StoreServer
server = StoreServer({"workers": 1})
after_master = gc.get_freeze_count()
app = server.load()
collectable = {id(o) for o in gc.get_objects()}
print(json.dumps({
    "master": after_master,
    "worker": gc.get_freeze_count(),
    "app_collectable": id(app) in collectable,
    "router_collectable": id(app.router) in collectable,
}))
"""


def test_the_master_and_each_worker_freeze_what_they_loaded(tmp_path: Path) -> None:
    env = {**os.environ, "WIDGET_STORE_DATABASE_URL": f"sqlite:///{tmp_path / 'store.db'}"}
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT], env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    seen = json.loads(done.stdout.strip().splitlines()[-1])
    assert seen["master"] > 0, "the master's imports were left to the collector"
    assert seen["worker"] > seen["master"], "the worker's app was left to the collector"
    assert not seen["app_collectable"] and not seen["router_collectable"]
