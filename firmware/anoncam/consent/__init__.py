"""Consent: enrolled people who may stay visible (issue 16). gallery.py keeps their embeddings,
enroll.py adds them from photos or clips, policy.py decides per face at run time."""
