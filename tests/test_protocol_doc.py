"""docs/PROTOCOL.md stays true: its worked example decodes, its tables match the code."""

from __future__ import annotations

import json
import re
from pathlib import Path

from warnshare.protocol import CLOSE_CODES, AlertKind, ErrorCode, TrackReport, decode_node_message

DOC = (Path(__file__).parent.parent / "docs" / "PROTOCOL.md").read_text()


def test_worked_example_hex_is_the_json_frame() -> None:
    blocks = re.findall(r"```(json)?\n(.*?)```", DOC, re.S)
    hex_block = next(b for lang, b in blocks if not lang and re.fullmatch(r"[0-9a-f\n]+", b))
    json_block = next(b for lang, b in blocks if lang == "json")
    frame = bytes.fromhex(hex_block.replace("\n", ""))
    decoded = decode_node_message(frame)
    expected = json.loads(json_block)
    assert decoded.model_dump(mode="python") == decoded.model_validate(expected).model_dump(
        mode="python"
    )
    assert f"{len(frame)} bytes of msgpack" in DOC


def test_error_table_matches_the_code() -> None:
    rows = dict(re.findall(r"^\| `([A-Z_]+)` \| (\d{4}) \|", DOC, re.M))
    assert rows == {code.value: str(int(close)) for code, close in CLOSE_CODES.items()}
    assert set(rows) == {c.value for c in ErrorCode}


def test_every_report_field_and_alert_kind_is_documented() -> None:
    for name in TrackReport.model_fields:
        assert f"| `{name}` |" in DOC, name
    for kind in AlertKind:
        assert f"`{kind.value}`" in DOC, kind
