"""Bounded on-disk FIFO for events and snapshots (already anonymized) while the broker is unreachable.

One file per message, <12-digit number>.msg: a JSON header line (topic, retain), then the payload.
Files are written atomically; over `max_bytes` the oldest are deleted first and counted. Other files
in the folder are ignored (logged); a message whose header cannot be read is renamed .msg.bad."""
from __future__ import annotations

import json
import logging
import re
from collections import deque
from pathlib import Path

from ..sinks.files import write_atomic

log = logging.getLogger(__name__)
NAME = re.compile(r"[0-9]{12,}\.msg")  # 12 digits, more after 10^12 messages
BAD = ".bad"


class Spool:
    def __init__(self, directory: Path, max_bytes: int):
        self.dir = Path(directory)
        self.dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        for stale in self.dir.glob(".*.tmp"):
            stale.unlink(missing_ok=True)
        self.max_bytes = max_bytes
        self.items: deque[tuple[str, int]] = deque(sorted(self._scan(), key=lambda item: int(item[0][:-4])))
        self.bytes = sum(s for _, s in self.items)
        self.unsent = len(self.items)  # the last `unsent` items have not been handed to the client yet
        self.next_id = int(self.items[-1][0][:-4]) + 1 if self.items else 0
        self.spooled = 0   # messages written since start
        self.dropped = 0   # messages deleted unsent because of the size cap
        if self.items:
            log.info("mqtt spool: %d message(s) left from an earlier run will be sent first", len(self.items))

    def _scan(self) -> list[tuple[str, int]]:
        """The spooled messages (NAME.msg); anything else in the folder is left alone, with a log line."""
        found = []
        for p in self.dir.iterdir():
            if NAME.fullmatch(p.name) and p.is_file():
                found.append((p.name, p.stat().st_size))
            elif not p.name.endswith(BAD) and not p.name.endswith(".tmp"):
                log.warning("mqtt spool: %s is not a spooled message; ignored", p)
        return found

    def __len__(self) -> int:
        return len(self.items)

    def put(self, topic: str, payload: bytes, retain: bool) -> None:
        data = json.dumps({"topic": topic, "retain": retain}).encode() + b"\n" + payload
        if len(data) > self.max_bytes:
            self.dropped += 1
            log.warning("mqtt spool: a %d-byte message is larger than spool.max_bytes; dropped", len(data))
            return
        name = f"{self.next_id:012d}.msg"
        self.next_id += 1
        write_atomic(self.dir / name, data)
        self.items.append((name, len(data)))
        self.bytes += len(data)
        self.unsent += 1
        self.spooled += 1
        while self.bytes > self.max_bytes:
            self._drop_oldest()

    def _drop_oldest(self) -> None:
        name, size = self.items.popleft()
        (self.dir / name).unlink(missing_ok=True)
        self.bytes -= size
        self.unsent = min(self.unsent, len(self.items))
        self.dropped += 1
        log.warning("mqtt spool full (spool.max_bytes=%d): dropped the oldest message", self.max_bytes)

    def next_unsent(self) -> tuple[str, str, bytes, bool] | None:
        """(name, topic, payload, retain) of the oldest message not yet handed out; marks it handed out."""
        while self.unsent:
            i = len(self.items) - self.unsent
            name = self.items[i][0]
            self.unsent -= 1
            try:
                head, _, payload = (self.dir / name).read_bytes().partition(b"\n")
                meta = json.loads(head)
                if not isinstance(meta.get("topic"), str) or not meta["topic"]:
                    raise ValueError("no topic")
                return name, meta["topic"], payload, bool(meta.get("retain"))
            except (OSError, ValueError, AttributeError) as e:
                self._set_aside(i, f"{type(e).__name__}: {e}")
        return None

    def _set_aside(self, i: int, why: str) -> None:
        """A message that cannot be read is renamed NAME.msg.bad (kept for a look, never sent, never
        waited for) and leaves the queue."""
        name, size = self.items[i]
        del self.items[i]
        self.bytes -= size
        try:
            (self.dir / name).rename(self.dir / (name + BAD))
            where = f"set aside as {name + BAD}"
        except OSError as e:
            (self.dir / name).unlink(missing_ok=True)
            where = f"deleted (cannot rename: {e.strerror or e})"
        log.error("mqtt spool: %s cannot be read (%s); %s", self.dir / name, why[:200], where)

    def done(self, name: str) -> None:
        """The broker has the message: delete it (acknowledgements come in order)."""
        if self.items and self.items[0][0] == name:
            self.bytes -= self.items.popleft()[1]
        (self.dir / name).unlink(missing_ok=True)

