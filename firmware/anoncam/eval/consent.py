"""Consent figures (issue 16.4): false exempts on impostor faces, misses and time to exempt for
enrolled people, from the cached embeddings (consent_data.py) replayed through the policy's rule.

As the camera: stills (ORL, group photos) are matched with SFace, video tracks (the clips) with
FaceRes. Thresholds are chosen on a tuning split (ORL people 1-20 enrolled and as impostors among
themselves; each recognizer its own) and reported on faces they were not tuned on: ORL impostor
trials involving people 21-40, the three clips and the group photos; and FaceRes on the held-out ORL
impostors as single video checks. Run: python -m anoncam.eval.consent [out.json]
"""
from __future__ import annotations

import json
import math
import sys

import numpy as np

from ..consent.policy import boxes_near
from .consent_data import load

SIZE_JUMP = 0.25
ENROLL_SAMPLES = 30


gammaln = np.vectorize(math.lgamma)


def upper95(shown: int, n: int) -> float:
    """Exact (Clopper-Pearson) one-sided 95 % upper bound; for 0 events 1 - 0.05^(1/n)."""
    if n == 0:
        return 1.0
    if shown == 0:
        return 1 - 0.05 ** (1 / n)
    if shown >= n:
        return 1.0
    i = np.arange(shown + 1)
    logc = gammaln(n + 1) - gammaln(i + 1) - gammaln(n - i + 1)

    def cdf(p):  # P(X <= shown) for X ~ Binomial(n, p)
        return float(np.exp(logc + i * np.log(p) + (n - i) * np.log1p(-p)).sum())
    lo, hi = shown / n, 1.0
    for _ in range(100):  # the p at which cdf = 0.05 (cdf falls as p grows)
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if cdf(mid) > 0.05 else (lo, mid)
    return hi


def scores(gal: dict, e: np.ndarray) -> tuple[float, float]:
    s = sorted((float(np.max(g @ e)) for g in gal.values()), reverse=True)
    return s[0], s[0] - (max(s[1], 0.0) if len(s) > 1 else 0.0)


def replay(rows: np.ndarray, gal: dict, k: int, t: float, m: float, recheck: int = 1, lag: int = 0,
           boxes: np.ndarray | None = None, max_move: float = 0.5, near: float = 0.5) -> np.ndarray:
    """Per face-frame: shown? The ConsentPolicy rule on clip rows. `lag`: frames until a check's
    result is in (0: checked in the loop; the worker's results come in 1-2 frames later), one check
    per track at a time; `recheck`: an exempt track's checks every this many detected frames, shown
    until twice that without a result. The size-jump check is replayed; with `boxes` (x0, y0, x1, y1
    per row) the position check and the take-over rule (a box near another face's box, this frame or
    the last, starts over) too; without them the replay shows at least what the camera would."""
    names = list(gal)
    mats = np.stack([np.max(rows[:, 4:] @ gal[n].T, axis=1) for n in names], 1)  # face-frames x people
    shown = np.zeros(len(rows), bool)
    state: dict[int, dict] = {}
    gen = iter(range(1, 1 << 62))

    def clear(st):
        st.update(run=0, name=None, exempt=False, since=0, gen=next(gen))

    def apply(st, i):
        order = np.argsort(-mats[i])
        best = mats[i, order[0]]
        nxt = max(mats[i, order[1]], 0.0) if len(names) > 1 else 0.0
        if best < t or best - nxt < m:
            clear(st)
            return
        if names[order[0]] != st["name"]:
            clear(st)
            st["name"] = names[order[0]]
        st["run"] += 1
        st["since"] = 0
        st["exempt"] = st["exempt"] or st["run"] >= k

    frames = rows[:, 0].astype(int)
    starts = np.flatnonzero(np.r_[True, frames[1:] != frames[:-1]])
    last: dict[int, np.ndarray] = {}  # track id -> box in the previous frame
    for a, b in zip(starts, np.r_[starts[1:], len(rows)]):
        frame = frames[a]
        tids = rows[a:b, 1].astype(int).tolist()
        live = set(tids)
        crowded = set()
        if boxes is not None:
            if frames[max(a - 1, 0)] != frame - 1:
                last = {}  # the camera saw no face in the frame before
            others = list(zip(tids, boxes[a:b])) + list(last.items())
            crowded = {x for x, bx in zip(tids, boxes[a:b]) if any(y != x and boxes_near(bx, by, near)
                                                                   for y, by in others)}
            last = dict(zip(tids, boxes[a:b]))
        state = {x: y for x, y in state.items() if x in live}
        for st in state.values():  # results due by this frame
            p = st["pending"]
            if p is not None and p[1] <= frame:
                st["pending"] = None
                if p[0] == st["gen"]:
                    apply(st, p[2])
        for i in range(a, b):
            tid, ok, size = int(rows[i, 1]), rows[i, 2] > 0, float(rows[i, 3])
            st = state.get(tid)
            if st is None:
                st = state[tid] = {"size": None, "centre": None, "pending": None}
                clear(st)
            if not ok:
                clear(st)
                st["size"] = st["centre"] = None
                continue
            jump = st["size"] is not None and abs(size / st["size"] - 1) > SIZE_JUMP
            if boxes is not None:
                centre = (boxes[i, :2] + boxes[i, 2:]) / 2
                jump = jump or (st["size"] is not None
                                and float(np.max(np.abs(centre - st["centre"]))) > max_move * st["size"])
                st["centre"] = centre
            st["size"] = size
            if jump or tid in crowded:
                clear(st)
                continue
            if st["exempt"]:
                st["since"] += 1
                if st["since"] < recheck or st["pending"] is not None:
                    shown[i] = st["since"] < 2 * recheck
                    continue
            elif st["pending"] is not None:
                continue
            if lag == 0:
                apply(st, i)
            else:
                st["pending"] = (st["gen"], frame + lag, i)
            shown[i] = st["exempt"] and st["since"] < 2 * recheck
    return shown


def enroll_rows(rows: np.ndarray, lo: int, hi: int) -> np.ndarray:
    ok = rows[(rows[:, 2] > 0) & (rows[:, 0] >= lo) & (rows[:, 0] < hi)]
    idx = np.linspace(0, len(ok) - 1, min(ENROLL_SAMPLES, len(ok))).astype(int)
    return ok[idx, 4:]


def genuine(rows: np.ndarray, shown: np.ndarray, lo: int, fps: float) -> dict:
    """Shown share of detected face-frames from frame `lo` on, after each track's first second, and
    frames from a track's start (anywhere in the clip) to its first shown frame."""
    first: dict[int, int] = {}
    tte: dict[int, int] = {}
    after = []
    for r, s in zip(rows, shown):
        tid, f = int(r[1]), int(r[0])
        first.setdefault(tid, f)
        if s and tid not in tte:
            tte[tid] = f - first[tid]
        if f >= lo and r[2] > 0 and f - first[tid] >= fps:
            after.append(s)
    return {"shown_after_1s": float(np.mean(after)) if after else None, "face_frames": len(after),
            "tracks": len({int(r[1]) for r in rows if r[0] >= lo}), "time_to_exempt_frames": list(tte.values())}


def run(cc=None, lag: int = 2, subset: bool = False, data: dict | None = None) -> dict:
    """The consent section for the config's consent settings `cc` (default: the built-in ones): K, T,
    M, the still threshold and margin, and recheck_every are the camera's; the ORL tuning split says
    what it would choose. `lag`: frames a check's result takes to come back from the worker (0 when
    consent.worker is off). `subset`: consent_data.SUBSET (10 ORL people, 72 frames per clip stretch;
    tests), else every face; `data`: consent_data.load's embeddings of another recognizer."""
    from ..config import ConsentConfig
    cc = cc or ConsentConfig()
    lag = lag if cc.worker else 0
    d = data if data is not None else load(subset=subset)
    dims = [int(x) for x in d.get("dims", [d["orl"].shape[-1]])]

    def part(x: np.ndarray, video: bool) -> np.ndarray:
        """The SFace (stills) or FaceRes (video) part of embeddings x (the last axis)."""
        return x[..., dims[0]:] if video and len(dims) > 1 else x[..., :dims[0]]

    def video_rows(name: str, video: bool = True) -> np.ndarray:
        return np.concatenate([d[name][:, :4], part(d[name][:, 4:], video)], 1)
    orl, orl_v, ok = part(d["orl"], False), part(d["orl"], True), d["orl_ok"]
    n_orl = len(orl)
    half = n_orl // 2  # tuned on the first half of the people
    gal_orl = {p: orl[p, :3][ok[p, :3]] for p in range(n_orl)}
    gal_orl_v = {p: orl_v[p, :3][ok[p, :3]] for p in range(n_orl)}

    def orl_impostor(enrolled, impostors, video=False):
        o, g = (orl_v, gal_orl_v) if video else (orl, gal_orl)
        return np.array([float(np.max(g[p] @ o[q, s])) for p in enrolled for q in impostors
                         if q != p for s in range(10) if ok[q, s]])
    tune, tune_v = orl_impostor(range(half), range(half)), orl_impostor(range(half), range(half), True)
    k, t_video, m_video, t_still, m_still = cc.k, cc.threshold, cc.margin, cc.still_threshold, cc.still_margin

    def heldout(video=False):
        return np.concatenate([orl_impostor(range(half, n_orl), range(n_orl), video),
                               orl_impostor(range(half), range(half, n_orl), video)])
    held, held_v = heldout(), heldout(True)
    groups = part(d["groups"], False)
    fr, c12, c13 = video_rows("franck"), video_rows("cap12"), video_rows("cap13")
    gal_f = {"franck": enroll_rows(fr, 0, 24 * 60)}   # FaceRes: video tracks
    gal_c = {"cap": enroll_rows(c12, 0, 10 ** 6)}
    gal_fs = {"franck": enroll_rows(video_rows("franck", False), 0, 24 * 60)}  # SFace of the same faces: stills
    gal_cs = {"cap": enroll_rows(video_rows("cap12", False), 0, 10 ** 6)}
    all_gals = [{p: gal_orl[p]} for p in range(n_orl)] + [gal_fs, gal_cs]
    group_scores = np.array([scores(g, e)[0] for g in all_gals for e in groups])
    out = {"orl_people": n_orl, "k": k, "threshold": t_video, "margin": m_video, "still_threshold": t_still, "still_margin": m_still,
           "recheck_every": cc.recheck_every, "lag_frames": lag, "near": cc.near, "subset": subset,
           "recognizers": "SFace (stills), FaceRes (video)" if len(dims) > 1 else "one",
           "tuning": {"orl_impostor_trials": int(tune.size), "max_cos": float(tune.max()),
                      "q999_cos": float(np.quantile(tune, 0.999)),
                      # the rule the defaults came from: headroom over the worst (stills) / the 99.9 %
                      # (video, K >= 3 checks) tuning impostor, each on its recognizer
                      "suggested_still_threshold": round(float(tune.max()) + 0.05, 2),
                      "video_max_cos": float(tune_v.max()), "video_q999_cos": float(np.quantile(tune_v, 0.999)),
                      "suggested_threshold": round(float(np.quantile(tune_v, 0.999)) + 0.05, 2),
                      # with K <= 2 (fewer checks per track), the stills' stricter rule on the video recognizer
                      "suggested_threshold_k2": round(float(tune_v.max()) + 0.05, 2)}}
    orl_vs_clips = np.array([scores(g, orl[q, s])[0] for g in (gal_fs, gal_cs) for q in range(n_orl)
                             for s in range(10) if ok[q, s]])

    def still_shown(sc_margin):
        return int(sum(1 for c, mg in sc_margin if c >= t_still and mg >= m_still))
    held_ok = [(c, c) for c in held]  # one enrolled person: the margin is over 0
    orl_clip_ok = [scores(g, orl[q, s]) for g in (gal_fs, gal_cs) for q in range(n_orl) for s in range(10) if ok[q, s]]
    group_ok = [scores(g, e) for g in all_gals for e in groups]
    trials = {"orl_heldout_stills": (still_shown(held_ok), int(held.size), float(held.max())),
              "orl_vs_clip_people_stills": (still_shown(orl_clip_ok), int(orl_vs_clips.size),
                                            float(orl_vs_clips.max())),
              "group_photo_stills": (still_shown(group_ok), int(group_scores.size), float(group_scores.max()))}
    def rule(name, rows, gal):
        return replay(rows, gal, k, t_video, m_video, cc.recheck_every, lag, d[name + "_boxes"], cc.max_move, cc.near)
    for name, clip, rows, gal in (("cap12_vs_franck", "cap12", c12, gal_f), ("cap13_vs_franck", "cap13", c13, gal_f),
                                  ("franck_vs_cap", "franck", fr, gal_c)):
        det = rows[:, 2] > 0
        sh = rule(clip, rows, gal)
        trials[name] = (int(sh.sum()), int(len(rows)), float(np.max(rows[det, 4:] @ next(iter(gal.values())).T)))
    n = sum(v[1] for v in trials.values())
    shown = sum(v[0] for v in trials.values())
    out["impostors"] = {k2: {"shown": v[0], "trials": v[1], "max_cos": round(v[2], 3)} for k2, v in trials.items()}
    out["impostor_total"] = {"shown": shown, "trials": n, "rate": shown / n, "upper95": upper95(shown, n)}
    # The video recognizer on many people: each held-out ORL impostor photo as one video check (one
    # match at the video threshold and margin, where a track needs K in a row); not in the total.
    v_shown = int(np.sum((held_v >= t_video) & (held_v >= m_video)))
    out["video_check_on_orl"] = {"shown": v_shown, "trials": int(held_v.size), "max_cos": round(float(held_v.max()), 3),
                                 "upper95": upper95(v_shown, int(held_v.size))}
    gen_orl = np.array([float(np.max(gal_orl[p] @ orl[p, s])) for p in range(n_orl) for s in range(3, 10) if ok[p, s]])
    out["orl_genuine_still_exempt"] = float((gen_orl >= t_still).mean())
    gen_v = np.array([float(np.max(gal_orl_v[p] @ orl_v[p, s])) for p in range(n_orl) for s in range(3, 10) if ok[p, s]])
    out["orl_genuine_video_check"] = float((gen_v >= t_video).mean())
    fps = {"franck_last_minute": 24, "cap13_enrolled_from_cap12": 25}
    out["franck_last_minute"] = genuine(fr, rule("franck", fr, gal_f), 4800 - 24 * 60, 24)
    out["cap13_enrolled_from_cap12"] = genuine(c13, rule("cap13", c13, gal_c), 0, 25)
    for g in fps:
        t = out[g].pop("time_to_exempt_frames")
        out[g]["miss_rate_after_1s"] = None if out[g]["shown_after_1s"] is None else 1 - out[g]["shown_after_1s"]
        out[g]["time_to_exempt_frames_median"] = float(np.median(t)) if t else None
        out[g]["time_to_exempt_ms_median"] = float(np.median(t)) * 1000 / fps[g] if t else None
        out[g]["tracks_exempted"] = len(t)
    return out


def markdown(rep: dict) -> list[str]:
    """The consent section of the eval report."""
    tot = rep["impostor_total"]
    lines = ["", "## Consent (enrolled people stay visible)", "",
             f"Settings: K {rep['k']}, threshold {rep['threshold']}, margin {rep['margin']}, still "
             f"{rep['still_threshold']} / {rep['still_margin']}, recheck every {rep['recheck_every']} detected "
             f"frames, results {rep['lag_frames']} frame(s) after the crop, faces within {rep['near']} of a box of another "
             f"face start over. Recognizers: {rep['recognizers']}. Tuned on ORL people 1-{rep['orl_people'] // 2} "
             f"({rep['tuning']['orl_impostor_trials']} impostor stills, max cosine {rep['tuning']['max_cos']:.3f}, "
             f"video recognizer {rep['tuning']['video_max_cos']:.3f}); reported on faces not tuned on." + (" A small subset of the faces (tests)." if rep["subset"] else ""), "",
             "| impostor trials | shown | trials | max cosine |", "|---|---|---|---|"]
    for name, v in rep["impostors"].items():
        lines.append(f"| {name} | {v['shown']} | {v['trials']} | {v['max_cos']} |")
    lines += [f"| **total** | **{tot['shown']}** | **{tot['trials']}** | false-exempt rate {tot['rate']:.2e}, "
              f"upper 95 % {tot['upper95']:.1e} |", "",
              "| enrolled person | face-frames after 1 s | shown | miss rate | median time to exempt |",
              "|---|---|---|---|---|"]
    for name in ("franck_last_minute", "cap13_enrolled_from_cap12"):
        g = rep[name]
        if g["shown_after_1s"] is None:
            lines.append(f"| {name} | 0 | - | - | - |")
            continue
        tte = "-" if g["time_to_exempt_ms_median"] is None else \
            f"{g['time_to_exempt_frames_median']:.0f} frames ({g['time_to_exempt_ms_median']:.0f} ms)"
        lines.append(f"| {name} | {g['face_frames']} | {100 * g['shown_after_1s']:.1f} % | "
                     f"{100 * g['miss_rate_after_1s']:.1f} % | {tte} |")
    v = rep["video_check_on_orl"]
    lines += ["", f"ORL stills, enrolled from shots 1-3, shots 4-10 shown: {100 * rep['orl_genuine_still_exempt']:.1f} %.",
              f"The video check on ORL (each held-out impostor photo as one video check at the video threshold, "
              f"where a track needs K): {v['shown']} of {v['trials']} passed (max cosine {v['max_cos']}, upper 95 % "
              f"{v['upper95']:.1e}); genuine shots 4-10 passing: {100 * rep['orl_genuine_video_check']:.1f} %.",
              "Replayed: the size, position and take-over (faces near each other) checks of the camera.", ""]
    return lines


if __name__ == "__main__":
    rep = run()
    text = json.dumps(rep, indent=2)
    print(text)
    print("\n".join(markdown(rep)))
    if len(sys.argv) > 1:
        open(sys.argv[1], "w").write(text)
