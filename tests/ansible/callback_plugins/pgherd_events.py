# Records every task result as one JSON line in $PGHERD_EVENTS_FILE, so the
# end-to-end tests assert on what each task returned instead of parsing the
# screen output.
import json
import os
import time

from ansible.plugins.callback import CallbackBase

DOCUMENTATION = """
name: pgherd_events
type: aggregate
short_description: write task results as JSON lines for pgherd's tests
description: Writes one JSON object per task result to the file named by PGHERD_EVENTS_FILE.
"""


class CallbackModule(CallbackBase):
    CALLBACK_VERSION = 2.0
    CALLBACK_TYPE = "aggregate"
    CALLBACK_NAME = "pgherd_events"
    CALLBACK_NEEDS_ENABLED = True

    def __init__(self):
        super().__init__()
        self._path = os.environ.get("PGHERD_EVENTS_FILE")

    def _write(self, status, result):
        if not self._path:
            return
        event = {
            "host": result._host.get_name(),
            "task": result._task.get_name(),
            "action": result._task.action,
            "status": status,
            "result": result._result,
            "end": time.time(),
        }
        with open(self._path, "a") as f:
            f.write(json.dumps(event, default=str) + "\n")

    def v2_runner_on_ok(self, result):
        self._write("ok", result)

    def v2_runner_on_failed(self, result, ignore_errors=False):
        self._write("failed", result)

    def v2_runner_on_skipped(self, result):
        self._write("skipped", result)

    def v2_runner_on_unreachable(self, result):
        self._write("unreachable", result)
