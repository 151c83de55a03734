"""The relay's check of what the engine hands it: no alert goes out that its own readers refuse.

The engine builds alerts without validation (``protocol.construct``: validating each would cost
more than fusing it). A non-finite number in one, from a numerical fault, would be refused by
every client that decodes with the schema (``decode_relay_to_subscriber``): the frame holding
it fails, the client resumes with ``since=`` and is sent the same frame again, and a restarted
relay's journal replay refuses the stored alert too. So each encoded alert is scanned for a
non-finite float, which is cheap (~2 us a 1 KB alert); only on a hit is the alert validated in
full, and the parts that fail (state, launch, impact, assessment) are withheld from it, with a
note in its text. The alert keeps its id, kind and place in the stream: nothing after it is
held up, and a replay of the same input withholds the same parts, byte for byte.
"""

from __future__ import annotations

import re

import msgpack
from pydantic import BaseModel, ValidationError

from warnshare.protocol import Alert
from warnshare.relay.hub import EncodedAlert

#: A msgpack float64 (0xcb) with an all-ones exponent: NaN or an infinity. Those bytes can also
#: occur inside another value, which the full validation then clears.
_NON_FINITE = re.compile(rb"\xcb[\x7f\xff][\xf0-\xff]")
#: The parts of an alert that hold floats, which can be withheld without breaking the alert.
PARTS = ("state", "launch", "impact", "assessment")


def _invalid(part: BaseModel) -> bool:
    try:
        type(part).model_validate(part.model_dump())
    except ValidationError:
        return True
    return False


def checked(alert: Alert) -> tuple[EncodedAlert, list[str]]:
    """The alert encoded, and the parts withheld from it (none, nearly always)."""
    encoded = EncodedAlert(alert)
    if _NON_FINITE.search(encoded.msgpack) is None:
        return encoded, []
    if _valid(encoded):
        return encoded, []
    bad = [p for p in PARTS if getattr(alert, p) is not None and _invalid(getattr(alert, p))]
    encoded = _without(alert, bad)
    if not _valid(encoded):
        # what is left must be what every reader takes, or the stream would stall on it
        bad = [p for p in PARTS if getattr(alert, p) is not None]
        encoded = _without(alert, bad)
    return encoded, bad


def _without(alert: Alert, parts: list[str]) -> EncodedAlert:
    alert = alert.model_copy()  # the engine may hold the original's parts
    for p in parts:
        setattr(alert, p, None)
    note = f"[the relay withheld this alert's {', '.join(parts) or 'nothing'}: not finite]"
    alert.text = f"{alert.text} {note}" if alert.text else note
    return EncodedAlert(alert)


def _valid(encoded: EncodedAlert) -> bool:
    try:
        Alert.model_validate(msgpack.unpackb(encoded.msgpack, raw=False))
    except ValidationError:
        return False
    return True
