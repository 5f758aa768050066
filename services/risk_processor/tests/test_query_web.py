"""The web overview in a real headless Chromium (Debian's chromium, driven by playwright):
served by a running processor on a real broker, it shows the sample portfolio's accounts
of docs/product.md and updates live when a new snapshot arrives. Saves a screenshot
under var/ (var/query-web/overview.png)."""

from __future__ import annotations

import shutil
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import pytest

from processor_testkit import mark, position, publish, running, wallet
from riskwatch_common.contracts import Side
from riskwatch_common.settings import KafkaSettings

pytestmark = pytest.mark.integration

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]  # fmt: skip
SHOTS = Path(__file__).resolve().parents[3] / "var" / "query-web"
TOKEN = "web-test-token-0123456789"

NOW = datetime.now(UTC)
SAMPLE = [
    position("main", "BTCUSDT", Side.BUY, "0.5", 67500, 10, at=NOW),
    position("main", "ETHUSDT", Side.BUY, 5, 3450, 5, at=NOW),
    position("sub_trading", "SOLUSDT", Side.SELL, 100, 175, 3, at=NOW),
    position("sub_hedge", "BNBUSDT", Side.BUY, 20, 580, 8, at=NOW),
    wallet("main", equity=20000, maintenance_margin=300, at=NOW),
    wallet("sub_trading", equity=8000, maintenance_margin=90, at=NOW),
    wallet("sub_hedge", equity=5000, maintenance_margin=60, at=NOW),
    mark("BTCUSDT", 70000),
    mark("ETHUSDT", 3520),
    mark("SOLUSDT", "176.5"),
    mark("BNBUSDT", 584),
]


@pytest.fixture
def chromium() -> str:
    if not Path(CHROMIUM).exists():
        pytest.skip("chromium is not installed: run `make chromium` (Debian's package)")
    return CHROMIUM


async def test_web_overview_shows_the_accounts_and_updates_live(
    kafka: KafkaSettings, tmp_path: Path, chromium: str
) -> None:
    from playwright.async_api import async_playwright, expect

    # the absolute USD net limit is opt-in: this test turns it on for its portfolio alert
    async with running(
        kafka, tmp_path, query_token=TOKEN, net_exposure_limit_usd=Decimal(10000)
    ) as proc:
        await publish(kafka, SAMPLE)
        base = f"http://127.0.0.1:{proc.http.port}"
        async with async_playwright() as pw:
            browser = await pw.chromium.launch(executable_path=chromium, args=ARGS)
            try:
                page = await browser.new_page(viewport={"width": 1100, "height": 900})
                # the token travels in the fragment, which the browser never sends
                await page.goto(f"{base}/#token={TOKEN}")
                for account in ("main", "sub_trading", "sub_hedge"):
                    await expect(page.locator(f'article[data-account="{account}"]')).to_be_visible(
                        timeout=60_000
                    )
                portfolio_net = page.locator('article.portfolio dd[data-field="Net"]')
                # 35,000 + 17,600 - 17,650 + 11,680 (docs/product.md's sample at these marks)
                await expect(portfolio_net).to_have_text("+$46,630", timeout=60_000)
                assert "#token" not in page.url
                updates = int(await page.evaluate("document.body.dataset.updates"))

                # BTC moves: main's snapshot and the portfolio's change, the page follows
                await publish(kafka, [mark("BTCUSDT", 72000)])
                await expect(portfolio_net).to_have_text("+$47,630", timeout=30_000)
                main_net = page.locator('article[data-account="main"] dd[data-field="Net"]')
                await expect(main_net).to_have_text("+$53,600")
                assert int(await page.evaluate("document.body.dataset.updates")) > updates
                portfolio_alert = page.locator(
                    "#alerts li", has_text="WARNING portfolio net exposure usd"
                )
                await expect(portfolio_alert).to_be_visible()
                SHOTS.mkdir(parents=True, exist_ok=True)
                await page.screenshot(path=str(SHOTS / "overview.png"), full_page=True)
            finally:
                await browser.close()
