"""``riskwatch init``: the accounts, thresholds and ``.env`` files of a live deployment.

Everything can come from flags and the environment (for scripts) or from prompts (for people).
Secrets never come from flags (they would sit in the shell history and the process list): they
are read from the environment or asked without echo, and written only to files readable by
their owner (``keys/`` and ``.env``), never printed. The accounts file names the key files
relative to itself, so the same directory works on the host (``riskwatch doctor``) and mounted
into the containers (``docker-compose.live.yml``). The files are checked with the loaders the
services use before ``init`` reports success.
"""

from __future__ import annotations

import argparse
import getpass
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import yaml

from ingestor.accounts import load_group
from riskwatch_common.settings import ConfigError

REPO = Path(__file__).resolve().parents[3]
THRESHOLDS_EXAMPLE = REPO / "services" / "risk_processor" / "config" / "thresholds.example.yaml"
LIVE_COMPOSE = REPO / "docker-compose.live.yml"
ENVIRONMENTS = ("mainnet", "testnet", "demo")


@dataclass(frozen=True, slots=True)
class AccountEntry:
    name: str
    group: str
    environment: str = "mainnet"
    position_mode: str = "one_way"
    account_type: str = "unified"


def parse_account(spec: str) -> AccountEntry:
    """``name[:group[:environment[:position_mode]]]``, e.g. ``sub_hedge:core:mainnet:hedge``."""
    parts = spec.split(":")
    if not parts[0] or len(parts) > 4:
        raise argparse.ArgumentTypeError(
            f"--account {spec!r}: expected name[:group[:environment[:position_mode]]]"
        )
    name = parts[0]
    group = parts[1] if len(parts) > 1 and parts[1] else "main"
    environment = parts[2] if len(parts) > 2 and parts[2] else "mainnet"
    mode = parts[3] if len(parts) > 3 and parts[3] else "one_way"
    if environment not in ENVIRONMENTS:
        raise argparse.ArgumentTypeError(
            f"--account {spec!r}: environment must be one of {', '.join(ENVIRONMENTS)}"
        )
    if mode not in ("one_way", "hedge"):
        raise argparse.ArgumentTypeError(f"--account {spec!r}: position mode is one_way or hedge")
    return AccountEntry(name, group, environment, mode)


def accounts_document(accounts: list[AccountEntry]) -> dict[str, object]:
    return {
        "accounts": [
            {
                "name": a.name,
                "group": a.group,
                "account_type": a.account_type,
                "position_mode": a.position_mode,
                "environment": a.environment,
                "credentials": {
                    "api_key_file": f"keys/{a.name}.api_key",
                    "api_secret_file": f"keys/{a.name}.api_secret",
                },
            }
            for a in accounts
        ]
    }


def env_document(values: dict[str, str], live_dir: Path) -> str:
    lines = [
        "# Written by `riskwatch init`; read by docker compose and `riskwatch doctor`.",
        "# Holds secrets: keep it out of git (mode 0600). docs/going-live.md explains each line.",
        "# docker compose: the live file on top of the base one (no simulator)",
        "COMPOSE_FILE=docker-compose.yml:docker-compose.live.yml",
        "# for riskwatch doctor on this machine (the containers get kafka:9092)",
        "KAFKA_BOOTSTRAP_SERVERS=localhost:29092",
        f"RISKWATCH_LIVE_DIR={live_dir}",
        f"INGESTOR_ACCOUNTS_FILE={live_dir / 'accounts.yaml'}",
        f"RISK_PROCESSOR_THRESHOLDS_FILE={live_dir / 'thresholds.yaml'}",
    ]
    lines += [f"{name}={value}" for name, value in values.items()]
    return "\n".join(lines) + "\n"


def _write_private(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(text)


def _ask(prompt: str, *, secret: bool = False, default: str = "") -> str:
    shown = f"{prompt} [{default}]: " if default else f"{prompt}: "
    answer = getpass.getpass(shown) if secret else input(shown)
    return answer.strip() or default


def run_init(args: argparse.Namespace, ask: Callable[..., str] = _ask) -> int:
    live = Path(args.dir)
    env_file = Path(args.env_file)
    targets = [live / "accounts.yaml", live / "thresholds.yaml", env_file]
    existing = [str(p) for p in targets if p.exists()]
    if existing and not args.force:
        print(f"riskwatch init: {', '.join(existing)} exist; --force overwrites", file=sys.stderr)
        return 1
    interactive = not args.no_input
    accounts: list[AccountEntry] = list(args.account or [])
    while interactive and not accounts:
        name = ask("Account name (letters, digits, _ - .; empty to stop)")
        if not name:
            break
        group = ask("  group (one ingestor per group)", default="main")
        environment = ask("  environment (mainnet, testnet, demo)", default="mainnet")
        mode = ask("  position mode (one_way, hedge)", default="one_way")
        accounts.append(parse_account(f"{name}:{group}:{environment}:{mode}"))
        if ask("Another account? (y/N)", default="n").lower() != "y":
            break
    if not accounts:
        print("riskwatch init: no account given (--account name[:group...])", file=sys.stderr)
        return 1
    keys = live / "keys"
    for account in accounts:
        for part in ("api_key", "api_secret"):
            var = f"BYBIT_{account.name.upper().replace('-', '_').replace('.', '_')}_{part.upper()}"
            value = os.environ.get(var, "")
            if not value and interactive:
                value = ask(
                    f"{account.name}: Bybit {part.replace('_', ' ')} (read-only)", secret=True
                )
            if not value:
                print(
                    f"riskwatch init: no {part} for '{account.name}' ({var} unset); "
                    f"write it to {keys / f'{account.name}.{part}'} before starting",
                    file=sys.stderr,
                )
                continue
            _write_private(keys / f"{account.name}.{part}", value + "\n")
    live.mkdir(parents=True, exist_ok=True)
    (live / "accounts.yaml").write_text(
        "# Written by `riskwatch init`. Key files are relative to this file; see\n"
        "# services/ingestor/config/accounts.example.yaml for every field.\n"
        + yaml.safe_dump(accounts_document(accounts), sort_keys=False)
    )
    thresholds = THRESHOLDS_EXAMPLE.read_text()
    if args.net_exposure_limit_usd is not None:
        thresholds = thresholds.replace(
            "  net_exposure_usd: null ", f"  net_exposure_usd: {args.net_exposure_limit_usd} ", 1
        )
    (live / "thresholds.yaml").write_text(thresholds)
    secrets = {
        "NOTIFIER_TELEGRAM_BOT_TOKEN": (None, "Telegram bot token (empty: off)"),
        "NOTIFIER_TELEGRAM_CHAT_ID": (args.telegram_chat_id, "Telegram chat id"),
        "NOTIFIER_SLACK_WEBHOOK_URL": (None, "Slack webhook URL (empty: off)"),
        "HOLYSHEEP_API_KEY": (None, "HolySheep API key (empty: no LLM)"),
    }
    values: dict[str, str] = {}
    for var, (given, prompt) in secrets.items():
        value = given if given is not None else os.environ.get(var, "")
        if not value and interactive:
            if var == "NOTIFIER_TELEGRAM_CHAT_ID" and not values.get("NOTIFIER_TELEGRAM_BOT_TOKEN"):
                continue
            value = ask(prompt, secret=var != "NOTIFIER_TELEGRAM_CHAT_ID")
        if value:
            values[var] = value
    _write_private(env_file, env_document(values, live.resolve()))
    # what the services would say about these files, now rather than at first start
    try:
        for group in sorted({a.group for a in accounts}):
            load_group(live / "accounts.yaml", group)
    except ConfigError as exc:
        print(f"riskwatch init: wrote the files, but {exc}", file=sys.stderr)
        return 1
    print(f"wrote {live / 'accounts.yaml'}, {live / 'thresholds.yaml'}, {keys}/, {env_file}")
    for hint in missing_compose_groups(sorted({a.group for a in accounts})):
        print(hint)
    print("next: riskwatch doctor --env-file", env_file)
    return 0


def missing_compose_groups(groups: list[str], live_compose: Path = LIVE_COMPOSE) -> list[str]:
    """What to add to docker-compose.live.yml so that every group has its ingestor."""
    services = (yaml.safe_load(live_compose.read_text()) or {}).get("services", {})
    hints = []
    for group in groups:
        if f"ingestor-{group}" not in services:
            hints.append(
                f"add to {live_compose.name} under services: (one ingestor per group)\n"
                f"  ingestor-{group}:\n    <<: *live-ingestor\n    environment:\n"
                f"      <<: *live-ingestor-env\n      INGESTOR_GROUP: {group}\n"
                f"      INGESTOR_INSTANCE: {group}"
            )
    return hints


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("init", help="write the accounts, thresholds and .env of a live deployment")
    p.add_argument(
        "--dir", default="live", help="directory of accounts.yaml, thresholds.yaml, keys/"
    )
    p.add_argument("--env-file", default=".env")
    p.add_argument(
        "--account",
        action="append",
        type=parse_account,
        help="name[:group[:environment[:position_mode]]]; keys from BYBIT_<NAME>_API_KEY/_SECRET",
    )
    p.add_argument(
        "--telegram-chat-id",
        help="the chat alerts go to; NOTIFIER_TELEGRAM_BOT_TOKEN, NOTIFIER_SLACK_WEBHOOK_URL and "
        "HOLYSHEEP_API_KEY come from the environment or a prompt",
    )
    p.add_argument("--net-exposure-limit-usd", type=int)
    p.add_argument("--no-input", action="store_true", help="never prompt (flags and env only)")
    p.add_argument("--force", action="store_true", help="overwrite existing files")
    p.set_defaults(func=run_init)
