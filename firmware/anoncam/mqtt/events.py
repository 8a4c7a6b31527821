"""Face-track events from FrameResult.faces: appear, update (rate-limited), end.

An event carries the track id, its box in frame pixels, the covering method, whether the detector saw
the face in this frame, and times. Never image data or embeddings. `exempt` (consent: the track is
shown from now on) and `anonymized` (it is covered again) mark changes of a track's method to and from
None; only with consent.publish_names does `exempt` carry the enrolled name."""
from __future__ import annotations

from ..types import Face, FrameResult


class TrackEvents:
    def __init__(self, update_every_s: float):
        self.update_every_s = update_every_s
        self.open: dict[int, dict] = {}  # track id -> start ts, last sent ts, frames, last face fields

    @staticmethod
    def _face(f: Face) -> dict:
        return {"track_id": int(f.track_id), "box": [round(float(v)) for v in f.box[:4]],
                "method": f.method, "detected": bool(f.detected)}

    @staticmethod
    def _change(f: Face, face: dict, t: dict | None, ts: float, index: int) -> list[dict]:
        """[exempt] when a track becomes visible, [anonymized] when it is covered again, else []."""
        was_visible = t is not None and t["last"]["method"] is None
        if (f.method is None) == was_visible:
            return []
        ev = {"type": "exempt" if f.method is None else "anonymized", "ts": ts, "frame": index,
              "track_id": face["track_id"]}
        if f.method is None and f.consent_name is not None:
            ev["name"] = f.consent_name
        return [ev]

    def frame(self, result: FrameResult) -> list[dict]:
        """Events for one processed frame (call only for frames whose faces are known)."""
        ts, out, seen = round(result.timestamp, 3), [], set()
        size = [int(result.image.shape[1]), int(result.image.shape[0])] if result.image is not None else None
        for f in result.faces:
            face = self._face(f)
            seen.add(face["track_id"])
            t = self.open.get(face["track_id"])
            base = {"ts": ts, "frame": result.index, "frame_size": size, **face}
            change = self._change(f, face, t, ts, result.index)
            if t is None:
                self.open[face["track_id"]] = {"start": ts, "sent": ts, "frames": 1, "last": base}
                out += [{"type": "appear", **base}, *change]
                continue
            out += change
            t["frames"] += 1
            t["last"] = base
            if ts - t["sent"] >= self.update_every_s:
                t["sent"] = ts
                out.append({"type": "update", **base, "start_ts": t["start"]})
        for tid in [t for t in self.open if t not in seen]:
            out.append(self._end(tid, ts, result.index, "gone"))
        return out

    def end_all(self, ts: float, index: int, reason: str) -> list[dict]:
        return [self._end(tid, ts, index, reason) for tid in list(self.open)]

    def _end(self, tid: int, ts: float, index: int, reason: str) -> dict:
        t = self.open.pop(tid)
        last = t["last"]
        return {"type": "end", **last, "ts": ts, "frame": index, "start_ts": t["start"],
                "last_seen_ts": last["ts"], "duration_s": round(last["ts"] - t["start"], 3),
                "frames": t["frames"], "reason": reason}
