"""Suite-wide settings: under CI, hypothesis explores the same examples on every run, so a
green main stays green (locally it keeps searching with fresh random examples)."""

import os

from hypothesis import settings

settings.register_profile("ci", derandomize=True, print_blob=True)
if os.environ.get("CI"):
    settings.load_profile("ci")
