"""Page tokens of the newest-first listings (trade history, orders) in every
adapter: the sort key of the last item shown, (microseconds, id), opaque to
clients, so the next page starts right after it."""

from __future__ import annotations

import base64
import binascii

import orjson

from ..ports import InvalidPageToken


def encode_page_token(executed_at_us: int, order_id: str) -> str:
    raw = orjson.dumps([executed_at_us, order_id])
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def decode_page_token(token: str) -> tuple[int, str]:
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        executed_at_us, order_id = orjson.loads(raw)
    except (binascii.Error, ValueError, TypeError, orjson.JSONDecodeError):
        raise InvalidPageToken("pageToken is not a token this service issued") from None
    if (not isinstance(executed_at_us, int) or isinstance(executed_at_us, bool)
            or executed_at_us < 0 or not isinstance(order_id, str)):
        raise InvalidPageToken("pageToken is not a token this service issued")
    return executed_at_us, order_id


def order_page(states: list, limit: int, micros_of) -> tuple[list, str | None]:
    """Newest-first orders read `limit + 1` deep: the page, and the token of
    the next one (None on the last page). `micros_of` turns a time into
    the microseconds the stores sort by."""
    page = states[:limit]
    if len(states) <= limit:
        return page, None
    last = page[-1]
    return page, encode_page_token(micros_of(last.order.order_timestamp), last.order_id)
