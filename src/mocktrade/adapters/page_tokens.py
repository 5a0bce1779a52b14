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
