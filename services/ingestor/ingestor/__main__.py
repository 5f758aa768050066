"""``python -m ingestor --group NAME`` (or ``INGESTOR_GROUP``): serve one account group."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

from ingestor import app
from ingestor.accounts import load_group
from ingestor.settings import IngestorSettings
from riskwatch_common.runtime import run_main
from riskwatch_common.settings import ConfigError, load_settings


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ingestor", description=__doc__)
    parser.add_argument("--group", help="account group to serve (env INGESTOR_GROUP)")
    parser.add_argument("--accounts-file", help="accounts YAML (env INGESTOR_ACCOUNTS_FILE)")
    args = parser.parse_args(argv)
    overrides: dict[str, Any] = {}
    if args.group:
        overrides["group"] = args.group
    if args.accounts_file:
        overrides["accounts_file"] = args.accounts_file
    # The accounts file is checked before anything starts, so a bad file exits 2 with a
    # message naming the account and field, like a bad environment variable does; both are
    # reported together on one line.
    problems: list[str] = []
    accounts_file: str | None = overrides.get("accounts_file")
    group_name: str | None = overrides.get("group")
    try:
        settings = load_settings(IngestorSettings, **overrides)
        accounts_file, group_name = str(settings.accounts_file), settings.group
    except ConfigError as exc:
        problems.append(str(exc))
        accounts_file = accounts_file or os.environ.get("INGESTOR_ACCOUNTS_FILE")
        group_name = group_name or os.environ.get("INGESTOR_GROUP")
    group = None
    if accounts_file and group_name:
        try:
            group = load_group(Path(accounts_file), group_name)
        except ConfigError as exc:
            problems.append(str(exc))
    if problems or group is None:
        print(f"ingestor: {'; '.join(problems)}", file=sys.stderr)
        return 2
    return run_main(
        "ingestor",
        IngestorSettings,
        lambda s: app.main(s, group=group),
        argv_overrides=overrides,
    )


if __name__ == "__main__":
    sys.exit(main())
