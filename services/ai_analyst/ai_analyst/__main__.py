"""``python -m ai_analyst``."""

from __future__ import annotations

import sys

from ai_analyst.app import main
from ai_analyst.settings import SERVICE, AnalystSettings
from riskwatch_common.runtime import run_main

if __name__ == "__main__":
    sys.exit(run_main(SERVICE, AnalystSettings, main))
