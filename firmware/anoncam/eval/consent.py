"""Consent figures (issue 16.4): false exempts on impostor faces, misses and time to exempt for
enrolled people, from the cached embeddings (consent_data.py) replayed through the policy's rule.

Thresholds are chosen on a tuning split (ORL people 1-20 enrolled and as impostors among
themselves) and reported on faces they were not tuned on: ORL impostor trials involving people
21-40, the three clips and the group photos. Run: python -m anoncam.eval.consent [out.json]
"""
from __future__ import annotations

import json
import sys

import numpy as np

from .consent_data import load

SIZE_JUMP = 0.25
ENROLL_SAMPLES = 30


def upper95(shown: int, n: int) -> float:
    """Exact (Clopper-Pearson) one-sided 95 % upper bound; for 0 events 1 - 0.05^(1/n)."""
    if n == 0:
        return 1.0
    if shown == 0:
        return 1 - 0.05 ** (1 / n)
    from scipy.stats import beta
    return float(beta.ppf(0.95, shown + 1, n - shown))


def scores(gal: dict, e: np.ndarray) -> tuple[float, float]:
    s = sorted((float(np.max(g @ e)) for g in gal.values()), reverse=True)
    return s[0], s[0] - (max(s[1], 0.0) if len(s) > 1 else 0.0)


def replay(rows: np.ndarray, gal: dict, k: int, t: float, m: float) -> np.ndarray:
    """Per face-frame: shown? The ConsentPolicy rule (recheck every detected frame) on clip rows."""
    names = list(gal)
    mats = np.stack([np.max(rows[:, 4:] @ gal[n].T, axis=1) for n in names], 1)  # face-frames x people
    shown = np.zeros(len(rows), bool)
    state: dict[int, list] = {}  # track -> [run, name, size]
    last_frame = -1
    for i, r in enumerate(rows):
        frame, tid, ok, size = int(r[0]), int(r[1]), r[2] > 0, float(r[3])
        if frame != last_frame:
            live = set(rows[rows[:, 0] == frame, 1].astype(int))
            state = {a: b for a, b in state.items() if a in live}
            last_frame = frame
        st = state.setdefault(tid, [0, None, None])
        if not ok:
            state[tid] = [0, None, None]
            continue
        jump = st[2] is not None and abs(size / st[2] - 1) > SIZE_JUMP
        st[2] = size
        order = np.argsort(-mats[i])
        best = mats[i, order[0]]
        nxt = max(mats[i, order[1]], 0.0) if len(names) > 1 else 0.0
        if jump or best < t or best - nxt < m:
            st[0], st[1] = 0, None
            continue
        if names[order[0]] != st[1]:
            st[0], st[1] = 0, names[order[0]]
        st[0] += 1
        shown[i] = st[0] >= k
    return shown


def enroll_rows(rows: np.ndarray, lo: int, hi: int) -> np.ndarray:
    ok = rows[(rows[:, 2] > 0) & (rows[:, 0] >= lo) & (rows[:, 0] < hi)]
    idx = np.linspace(0, len(ok) - 1, min(ENROLL_SAMPLES, len(ok))).astype(int)
    return ok[idx, 4:]


def genuine(rows: np.ndarray, shown: np.ndarray, lo: int, fps: float) -> dict:
    """Shown share of detected face-frames from frame `lo` on, after each track's first second, and
    frames from a track's start to its first shown frame."""
    sel = rows[:, 0] >= lo
    first: dict[int, int] = {}
    tte = []
    after = []
    for r, s in zip(rows[sel], shown[sel]):
        tid, f = int(r[1]), int(r[0])
        first.setdefault(tid, f)
        if s and tid not in [x[0] for x in tte]:
            tte.append((tid, f - first[tid]))
        if r[2] > 0 and f - first[tid] >= fps:
            after.append(s)
    return {"shown_after_1s": float(np.mean(after)) if after else None, "face_frames": len(after),
            "tracks": len(first), "time_to_exempt_frames": [x[1] for x in tte]}


def run(k: int | None = None) -> dict:
    d = load()
    orl, ok = d["orl"], d["orl_ok"]
    gal_orl = {p: orl[p, :3][ok[p, :3]] for p in range(40)}

    def orl_impostor(enrolled, impostors):
        return np.array([float(np.max(gal_orl[p] @ orl[q, s])) for p in enrolled for q in impostors
                         if q != p for s in range(10) if ok[q, s]])
    tune = orl_impostor(range(20), range(20))
    t_still = round(float(tune.max()) + 0.05, 2)  # headroom over the worst tuning impostor
    t_video = round(float(np.quantile(tune, 0.999)) + 0.05, 2)
    m_still, m_video = 0.1, 0.05
    k = k or 3
    held = np.concatenate([orl_impostor(range(20, 40), range(40)), orl_impostor(range(20), range(20, 40))])
    groups = d["groups"]
    fr, c12, c13 = d["franck"], d["cap12"], d["cap13"]
    gal_f = {"franck": enroll_rows(fr, 0, 24 * 60)}
    gal_c = {"cap": enroll_rows(c12, 0, 10 ** 6)}
    all_gals = [{p: gal_orl[p]} for p in range(40)] + [gal_f, gal_c]
    group_scores = np.array([scores(g, e)[0] for g in all_gals for e in groups])
    out = {"k": k, "threshold": t_video, "margin": m_video, "still_threshold": t_still, "still_margin": m_still,
           "tuning": {"orl_impostor_trials": int(tune.size), "max_cos": float(tune.max()),
                      "q999_cos": float(np.quantile(tune, 0.999))}}
    orl_vs_clips = np.array([scores(g, orl[q, s])[0] for g in (gal_f, gal_c) for q in range(40)
                             for s in range(10) if ok[q, s]])
    trials = {"orl_heldout_stills": (int((held >= t_still).sum()), int(held.size), float(held.max())),
              "orl_vs_clip_people_stills": (int((orl_vs_clips >= t_still).sum()), int(orl_vs_clips.size),
                                            float(orl_vs_clips.max())),
              "group_photo_stills": (int((group_scores >= t_still).sum()), int(group_scores.size),
                                     float(group_scores.max()))}
    for name, rows, gal in (("cap12_vs_franck", c12, gal_f), ("cap13_vs_franck", c13, gal_f),
                            ("franck_vs_cap", fr, gal_c)):
        det = rows[:, 2] > 0
        sh = replay(rows, gal, k, t_video, m_video)
        trials[name] = (int(sh.sum()), int(len(rows)), float(np.max(rows[det, 4:] @ next(iter(gal.values())).T)))
    n = sum(v[1] for v in trials.values())
    shown = sum(v[0] for v in trials.values())
    out["impostors"] = {k2: {"shown": v[0], "trials": v[1], "max_cos": round(v[2], 3)} for k2, v in trials.items()}
    out["impostor_total"] = {"shown": shown, "trials": n, "upper95": upper95(shown, n)}
    gen_orl = np.array([float(np.max(gal_orl[p] @ orl[p, s])) for p in range(40) for s in range(3, 10) if ok[p, s]])
    out["orl_genuine_still_exempt"] = float((gen_orl >= t_still).mean())
    out["franck_last_minute"] = genuine(fr, replay(fr, gal_f, k, t_video, m_video), 4800 - 24 * 60, 24)
    out["cap13_enrolled_from_cap12"] = genuine(c13, replay(c13, gal_c, k, t_video, m_video), 0, 25)
    for g in ("franck_last_minute", "cap13_enrolled_from_cap12"):
        t = out[g].pop("time_to_exempt_frames")
        out[g]["time_to_exempt_frames_median"] = float(np.median(t)) if t else None
        out[g]["tracks_exempted"] = len(t)
    return out


if __name__ == "__main__":
    rep = run()
    text = json.dumps(rep, indent=2)
    print(text)
    if len(sys.argv) > 1:
        open(sys.argv[1], "w").write(text)
