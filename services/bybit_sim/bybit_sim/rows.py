"""Bybit v5 row builders: exact field names and string-number formats (docs/bybit-v5.md §2, §3.6).

REST and WS rows share builders; they differ where Bybit differs (`avgPrice` vs `entryPrice`,
`category` inside WS rows, liqPrice "" vs "0" on flat positions).
"""

from __future__ import annotations

from decimal import ROUND_HALF_UP, Decimal

from bybit_sim.margin import Tier
from bybit_sim.state import MAKER_FEE_RATE, TAKER_FEE_RATE, Account, Market, Order
from bybit_sim.valuation import PositionView, WalletView

Row = dict[str, object]

_FUNDING_INTERVAL_MS = 8 * 3600 * 1000


def fmt(value: Decimal, places: int = 8) -> str:
    """Decimal as Bybit prints numbers: plain notation, no exponent, no trailing zeros."""
    quantized = value.quantize(Decimal(1).scaleb(-places), rounding=ROUND_HALF_UP)
    text = format(quantized.normalize(), "f")
    return "0" if text in ("-0", "0") else text


def fmt_rate(value: Decimal) -> str:
    return fmt(value, 4)


def fmt_leverage(value: Decimal) -> str:
    return fmt(value, 2)


def position_row(view: PositionView, *, ws: bool) -> Row:
    p = view.position
    flat = not p.is_open
    entry = fmt(p.entry_price) if not flat else "0"
    # No liquidation price: REST sends "", the WS example sends "0" for a flat position.
    no_liq = "0" if (ws and flat) else ""
    liq = fmt(view.liq_price) if view.liq_price is not None else no_liq
    row: Row = {
        "positionIdx": p.position_idx,
        "tradeMode": 0,
        "riskId": view.tier.id,
        "riskLimitValue": fmt(view.tier.risk_limit_value),
        "symbol": p.symbol,
        "side": p.side if not flat else "",
        "size": fmt(p.size),
        ("entryPrice" if ws else "avgPrice"): entry,
        "leverage": fmt_leverage(p.leverage),
        "breakEvenPrice": _break_even(p.side, p.entry_price) if not flat else "0",
        "positionValue": fmt(view.value),
        "positionBalance": fmt(view.im),
        "markPrice": fmt(view.mark_price),
        "positionIM": fmt(view.im),
        "positionIMByMp": fmt(view.im),
        "positionMM": fmt(view.mm),
        "positionMMByMp": fmt(view.mm),
        "takeProfit": "0",
        "stopLoss": "0",
        "trailingStop": "0",
        "unrealisedPnl": fmt(view.upl),
        "curRealisedPnl": fmt(p.cur_realised_pnl),
        "cumRealisedPnl": fmt(p.cum_realised_pnl),
        "sessionAvgPrice": "",
        "createdTime": str(p.created_time),
        "updatedTime": str(p.updated_time),
        "tpslMode": "Full",
        "liqPrice": liq,
        "bustPrice": "",
        "positionStatus": p.position_status,
        "adlRankIndicator": 0 if flat else 2,
        "autoAddMargin": 0,
        "leverageSysUpdatedTime": p.leverage_sys_updated_time,
        "mmrSysUpdatedTime": p.mmr_sys_updated_time,
        "seq": p.seq,
        "isReduceOnly": p.is_reduce_only,
    }
    if ws:
        row["category"] = "linear"
    else:
        row["openTime"] = p.created_time if not flat else 0
    return row


def _break_even(side: str, entry: Decimal) -> str:
    # Price at which closing covers the taker fee paid on both legs.
    if side == "Buy":
        return fmt(entry * (1 + TAKER_FEE_RATE) / (1 - TAKER_FEE_RATE))
    return fmt(entry * (1 - TAKER_FEE_RATE) / (1 + TAKER_FEE_RATE))


def order_row(order: Order, *, ws: bool) -> Row:
    leaves = order.leaves_qty
    row: Row = {
        "symbol": order.symbol,
        "orderId": order.order_id,
        "orderLinkId": order.order_link_id,
        "blockTradeId": "",
        "side": order.side,
        "positionIdx": order.position_idx,
        "orderStatus": order.status,
        "cancelType": order.cancel_type,
        "rejectReason": order.reject_reason,
        "avgPrice": fmt(order.avg_price),
        "leavesQty": fmt(leaves),
        "leavesValue": fmt(leaves * order.price),
        "price": fmt(order.price),
        "qty": fmt(order.qty),
        "cumExecQty": fmt(order.cum_exec_qty),
        "cumExecValue": fmt(order.cum_exec_value),
        "cumExecFee": fmt(order.cum_exec_fee),
        "closedPnl": fmt(order.closed_pnl),
        "timeInForce": order.time_in_force,
        "orderType": order.order_type,
        "stopOrderType": "",
        "orderIv": "",
        "triggerPrice": "",
        "takeProfit": "",
        "stopLoss": "",
        "tpTriggerBy": "",
        "slTriggerBy": "",
        "tpLimitPrice": "",
        "slLimitPrice": "",
        "triggerDirection": 0,
        "triggerBy": "",
        "lastPriceOnCreated": fmt(order.last_price_on_created),
        "reduceOnly": order.reduce_only,
        "closeOnTrigger": False,
        "placeType": "",
        "smpType": "None",
        "smpGroup": 0,
        "smpOrderId": "",
        "tpslMode": "",
        "createType": "CreateByUser",
        "isLeverage": "",
        "parentOrderLinkId": "",
        "marketUnit": "",
        "feeCurrency": "USDT",
        "cumFeeDetail": {"USDT": fmt(order.cum_exec_fee)} if order.cum_exec_fee else {},
        "createdTime": str(order.created_time),
        "updatedTime": str(order.updated_time),
    }
    if ws:
        row["category"] = "linear"
    return row


def execution_row(
    *,
    order: Order,
    exec_id: str,
    exec_price: Decimal,
    exec_qty: Decimal,
    exec_fee: Decimal,
    fee_rate: Decimal,
    is_maker: bool,
    closed_size: Decimal,
    exec_pnl: Decimal,
    mark_price: Decimal,
    exec_time: int,
    seq: int,
) -> Row:
    return {
        "category": "linear",
        "symbol": order.symbol,
        "closedSize": fmt(closed_size),
        "execFee": fmt(exec_fee),
        "execId": exec_id,
        "execPrice": fmt(exec_price),
        "execQty": fmt(exec_qty),
        "execType": "Trade",
        "execValue": fmt(exec_price * exec_qty),
        "feeRate": fmt(fee_rate),
        "tradeIv": "",
        "markIv": "",
        "blockTradeId": "",
        "markPrice": fmt(mark_price),
        "indexPrice": "",
        "underlyingPrice": "",
        "leavesQty": fmt(order.leaves_qty),
        "orderId": order.order_id,
        "orderLinkId": order.order_link_id,
        "orderPrice": fmt(order.price),
        "orderQty": fmt(order.qty),
        "orderType": order.order_type,
        "stopOrderType": "UNKNOWN",
        "side": order.side,
        "execTime": str(exec_time),
        "isLeverage": "0",
        "isMaker": is_maker,
        "seq": seq,
        "marketUnit": "",
        "execPnl": fmt(exec_pnl),
        "createType": "CreateByUser",
        "extraFees": [],
        "feeCurrency": "USDT",
    }


def rest_execution_row(ws_row: Row) -> Row:
    """The `/v5/execution/list` form of an execution: the WS row without `category` (the
    REST reply names the category once, beside the list)."""
    return {k: v for k, v in ws_row.items() if k != "category"}


def fee_rate_for(is_maker: bool) -> Decimal:
    return MAKER_FEE_RATE if is_maker else TAKER_FEE_RATE


def wallet_row(view: WalletView, account_type: str = "UNIFIED") -> Row:
    """One account row with a USDT coin row; USDT counts at 1 USD. `account_type` is the
    wire value (UNIFIED, or CONTRACT for a standard account); the maths is the same."""
    equity = view.margin_balance
    return {
        "accountType": account_type,
        "accountIMRate": fmt_rate(view.im_rate),
        "accountIMRateByMp": fmt_rate(view.im_rate),
        "accountMMRate": fmt_rate(view.mm_rate),
        "accountMMRateByMp": fmt_rate(view.mm_rate),
        "totalEquity": fmt(equity),
        "totalWalletBalance": fmt(view.wallet_balance),
        "totalMarginBalance": fmt(view.margin_balance),
        "totalAvailableBalance": fmt(view.available),
        "totalPerpUPL": fmt(view.upl),
        "totalInitialMargin": fmt(view.total_im),
        "totalInitialMarginByMp": fmt(view.total_im),
        "totalMaintenanceMargin": fmt(view.total_mm),
        "totalMaintenanceMarginByMp": fmt(view.total_mm),
        "accountLTV": "0",
        "coin": [
            {
                "coin": "USDT",
                "equity": fmt(equity),
                "usdValue": fmt(equity),
                "walletBalance": fmt(view.wallet_balance),
                "availableToWithdraw": "",
                "availableToBorrow": "",
                "borrowAmount": "0",
                "accruedInterest": "0",
                "totalOrderIM": fmt(view.order_im),
                "totalPositionIM": fmt(view.position_im),
                "totalPositionMM": fmt(view.total_mm),
                "unrealisedPnl": fmt(view.upl),
                "cumRealisedPnl": fmt(view.cum_realised_pnl),
                "bonus": "0",
                "collateralSwitch": True,
                "marginCollateral": True,
                "locked": "0",
                "spotHedgingQty": "0",
                "spotBorrow": "0",
            }
        ],
    }


def ticker_row(market: Market, now_ms: int) -> Row:
    """Linear ticker; the WS stream sends it whole as a snapshot, then changed fields only."""
    mark = market.mark_price
    tick = market.tick_size
    change = (mark - market.start_price) / market.start_price
    next_funding = (now_ms // _FUNDING_INTERVAL_MS + 1) * _FUNDING_INTERVAL_MS
    return {
        "symbol": market.symbol,
        "tickDirection": market.tick_direction,
        "price24hPcnt": fmt(change, 6),
        "lastPrice": fmt(mark),
        "prevPrice24h": fmt(market.start_price),
        "highPrice24h": fmt(market.high_24h),
        "lowPrice24h": fmt(market.low_24h),
        "prevPrice1h": fmt(market.start_price),
        "markPrice": fmt(mark),
        "indexPrice": fmt(mark),
        "openInterest": fmt(market.open_interest),
        "openInterestValue": fmt(market.open_interest * mark, 2),
        "turnover24h": fmt(market.volume_24h * market.start_price, 4),
        "volume24h": fmt(market.volume_24h),
        "nextFundingTime": str(next_funding),
        "fundingRate": fmt(market.funding_rate),
        "fundingIntervalHour": "8",
        "fundingCap": "0.005",
        "bid1Price": fmt(mark - tick),
        "bid1Size": "1",
        "ask1Price": fmt(mark + tick),
        "ask1Size": "1",
    }


def risk_limit_rows(market: Market) -> list[Row]:
    return [_risk_limit_row(market.symbol, tier) for tier in market.tiers]


def _risk_limit_row(symbol: str, tier: Tier) -> Row:
    return {
        "id": tier.id,
        "symbol": symbol,
        "riskLimitValue": fmt(tier.risk_limit_value),
        "maintenanceMargin": fmt(tier.mmr),
        "initialMargin": fmt(tier.imr),
        "isLowestRisk": 1 if tier.is_lowest_risk else 0,
        # Bybit prints maxLeverage with two decimals ("100.00") but position leverage bare.
        "maxLeverage": format(tier.max_leverage.quantize(Decimal("0.01")), "f"),
        "mmDeduction": "" if tier.is_lowest_risk else fmt(tier.mm_deduction),
    }


def account_info_row(account: Account) -> Row:
    return {
        "userID": account.uid,
        "isMaster": account.is_master,
        "parentUid": "0" if account.is_master else str(account.parent_uid),
        "readOnly": 1 if account.key.read_only else 0,
        "apiKey": account.api_key,
        "note": f"riskwatch sim {account.name}",
    }
