"""``python -m notifier``."""

from __future__ import annotations

import sys

from notifier.app import main
from notifier.settings import SERVICE, NotifierSettings
from riskwatch_common.runtime import run_main

if __name__ == "__main__":
    sys.exit(run_main(SERVICE, NotifierSettings, main))
