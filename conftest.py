"""Settings for the whole test suite (tests/ and integrations/*/tests): no test may talk to the internet.

Haystack sends anonymous usage telemetry (PostHog) and Ray usage statistics unless told not to; the suite is
offline by design, so both are switched off before any test imports them.
"""

import os

os.environ.setdefault("HAYSTACK_TELEMETRY_ENABLED", "False")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
