"""`anoncam eval --consent` (eval/consent.py): the consent section on a small subset of the real
faces (consent_data.SUBSET: 10 ORL people, one group photo, 72 frames of each clip stretch; real
models, embeddings cached after the first run)."""
from __future__ import annotations

from anoncam.config import ConsentConfig
from anoncam.eval import consent


def test_consent_section_reports_false_exempts_misses_and_time_to_exempt(models, media):
    rep = consent.run(ConsentConfig(), subset=True)
    text = "\n".join(consent.markdown(rep))
    assert "## Consent (enrolled people stay visible)" in text and "A small subset" in text
    tot = rep["impostor_total"]
    assert tot["trials"] >= 1000 and tot["shown"] == 0 and tot["rate"] == 0
    assert abs(tot["upper95"] - (1 - 0.05 ** (1 / tot["trials"]))) < 1e-12
    assert f"false-exempt rate {tot['rate']:.2e}, upper 95 % {tot['upper95']:.1e}" in text
    assert "| enrolled person | face-frames after 1 s | shown | miss rate | median time to exempt |" in text
    for name in ("franck_last_minute", "cap13_enrolled_from_cap12"):
        g = rep[name]
        assert g["face_frames"] >= 40 and g["miss_rate_after_1s"] <= 0.1 and g["tracks_exempted"] >= 1
        assert f"| {name} | {g['face_frames']} | {100 * g['shown_after_1s']:.1f} % | " \
               f"{100 * g['miss_rate_after_1s']:.1f} % | {g['time_to_exempt_frames_median']:.0f} frames" in text


def test_consent_section_shows_false_exempts_of_lax_settings(models, media):
    """The section can fail: thresholds near 0 exempt strangers, and the report counts them."""
    lax = ConsentConfig(threshold=0.01, margin=0.0, still_threshold=0.01, still_margin=0.0)
    rep = consent.run(lax, subset=True)
    tot = rep["impostor_total"]
    assert tot["shown"] > 100 and tot["upper95"] > tot["rate"] > 0
    assert f"| **total** | **{tot['shown']}** | **{tot['trials']}** |" in "\n".join(consent.markdown(rep))
