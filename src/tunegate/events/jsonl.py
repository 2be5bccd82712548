"""The JSON-lines sink: one JSON object per event, for tools and `tunegate run --events`.

Each line is `{"event": KIND, "time": ISO-8601, ...the event's fields}`; the state's records are
left out (they are in `state.json`). Every climb appends to its run directory's `events.jsonl`,
so the file is the climb's log across resumes.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import TextIO

from tunegate.events import Event, event_json


class JsonLinesSink:
    def __init__(self, stream: TextIO) -> None:
        self.stream = stream

    def emit(self, event: Event) -> None:
        line = {"time": datetime.now(UTC).isoformat(timespec="milliseconds"), **event_json(event)}
        # allow_nan=False: an event never carries NaN (a metric without a value is None).
        try:
            self.stream.write(json.dumps(line, ensure_ascii=False, allow_nan=False) + "\n")
            self.stream.flush()
        except OSError as err:
            if err.filename is None and isinstance(getattr(self.stream, "name", None), str):
                # A write or flush says no file; a full disk's one line must name it.
                raise OSError(err.errno, err.strerror, self.stream.name) from err
            raise
