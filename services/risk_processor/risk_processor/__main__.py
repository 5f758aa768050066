"""``python -m risk_processor``: the Faust worker, run by us rather than the ``faust`` CLI.

The CLI would start Faust's own web server on 6066 (its ``--with-web`` default overrides
``web_enabled``), so two workers on one host collide; here the worker runs inside our
runtime with our settings, logging, signals and HTTP server (``RISK_PROCESSOR_HTTP_PORT``).
"""

import sys

from risk_processor.app import SERVICE, main
from risk_processor.settings import RiskProcessorSettings
from riskwatch_common.runtime import run_main

if __name__ == "__main__":
    sys.exit(run_main(SERVICE, RiskProcessorSettings, main))
