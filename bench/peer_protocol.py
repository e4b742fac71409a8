"""The workers' side of bench/peer_bench.py's protocol, shared by both venvs (plain Python, no TF, no torch).

The bench starts each worker once and keeps it: it writes one JSON command per line on the worker's
stdin, {"do": "train", "args": [20]}, and the worker runs it and answers one line on stdout, REPLY and
a JSON object. So the sides take turns in bursts of a second or two, and a burst of ours and one of
PyTorch's run seconds apart, on the same machine state.
"""

from __future__ import annotations

import json
import sys

REPLY = "peer-bench-reply "  # what tells a reply from anything else a library prints on stdout


def serve(worker: object) -> None:
    """Answers commands until stdin closes: `do` names a method of `worker`, which returns a JSON-able dict."""
    print(REPLY + json.dumps({"ready": True}), flush=True)
    for line in sys.stdin:
        command = json.loads(line)
        print(REPLY + json.dumps(getattr(worker, command["do"])(*command.get("args", ()))), flush=True)
