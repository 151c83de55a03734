"""Who may speak and listen: Ed25519 node keys, the relay's trust store, subscriber tokens.

Sans-I/O apart from loading files: signing and verification take bytes and return bytes or
raise ``ProtocolError(AUTH_FAILED | REPLAYED)``. What is signed (see docs/PROTOCOL.md):

- a hello: ``b"warnshare/v1/hello\\0" + nation + b"\\0" + node_id + b"\\0" + sent_ns + b"\\0" + nonce``
  (text fields UTF-8, ``sent_ns`` in decimal ASCII);
- a batch: ``b"warnshare/v1/batch\\0" + node_id + b"\\0" + payload``, where ``payload`` is the exact
  msgpack bytes of the ``report_batch`` carried inside a ``signed_batch`` frame.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import secrets
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

from nacl.exceptions import BadSignatureError
from nacl.signing import SigningKey, VerifyKey

from warnshare.protocol import NATIONS, ErrorCode, Nation, ProtocolError

HELLO_CONTEXT = b"warnshare/v1/hello\0"
BATCH_CONTEXT = b"warnshare/v1/batch\0"
#: Hellos and batches whose sent_ns is further than this from the relay's clock are replays.
DEFAULT_TIME_WINDOW_NS = 30_000_000_000


def hello_message(nation: str, node_id: str, sent_ns: int, nonce: bytes) -> bytes:
    return HELLO_CONTEXT + b"\0".join(
        (nation.encode(), node_id.encode(), str(sent_ns).encode(), nonce)
    )


def batch_message(node_id: str, payload: bytes) -> bytes:
    return BATCH_CONTEXT + node_id.encode() + b"\0" + payload


def key_id_of(verify_key: VerifyKey) -> str:
    """A short stable name of a public key: the first 16 hex digits of its SHA-256."""
    return hashlib.sha256(bytes(verify_key)).hexdigest()[:16]


@dataclass(frozen=True)
class NodeKey:
    """A node's signing key (private)."""

    nation: Nation
    signing_key: SigningKey

    @property
    def key_id(self) -> str:
        return key_id_of(self.signing_key.verify_key)

    def sign(self, message: bytes) -> bytes:
        return self.signing_key.sign(message).signature

    @classmethod
    def load(cls, path: str | Path) -> NodeKey:
        doc = json.loads(Path(path).read_text())
        return cls(Nation(doc["nation"]), SigningKey(base64.b64decode(doc["private_key"])))


@dataclass(frozen=True)
class Consumer:
    name: str
    nation: Nation


class TrustStore:
    """Public keys the relay accepts, per nation, and the subscriber tokens it knows (hashed)."""

    def __init__(
        self, keys: dict[str, tuple[Nation, VerifyKey]], token_hashes: dict[str, Consumer]
    ) -> None:
        self.keys = keys  # key_id -> (nation, key)
        self.token_hashes = token_hashes  # sha256 hex of token -> consumer

    @classmethod
    def load(cls, path: str | Path) -> TrustStore:
        """trust.json: {"nodes": [{nation, key_id, public_key}], "consumers": [{name, nation, token_sha256}]}"""
        try:
            doc = json.loads(Path(path).read_text())
            keys = {}
            for entry in doc.get("nodes", []):
                vk = VerifyKey(base64.b64decode(entry["public_key"]))
                keys[key_id_of(vk)] = (Nation(entry["nation"]), vk)
            tokens = {
                c["token_sha256"]: Consumer(c["name"], Nation(c["nation"]))
                for c in doc.get("consumers", [])
            }
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise SystemExit(f"cannot load the trust store {path}: {exc}") from None
        return cls(keys, tokens)

    def verify_hello(
        self,
        nation: Nation,
        node_id: str,
        sent_ns: int,
        key_id: str,
        nonce: bytes,
        signature: bytes,
    ) -> None:
        self._verify(
            nation, key_id, hello_message(nation.value, node_id, sent_ns, nonce), signature, "hello"
        )

    def verify_batch(
        self, nation: Nation, key_id: str, node_id: str, payload: bytes, signature: bytes
    ) -> None:
        self._verify(nation, key_id, batch_message(node_id, payload), signature, "batch")

    def _verify(
        self, nation: Nation, key_id: str, message: bytes, signature: bytes, what: str
    ) -> None:
        entry = self.keys.get(key_id)
        if entry is None:
            raise ProtocolError(
                ErrorCode.AUTH_FAILED, f"{what}: key {key_id!r} is not in the trust store"
            )
        key_nation, vk = entry
        if key_nation != nation:
            raise ProtocolError(
                ErrorCode.NATION_MISMATCH,
                f"{what}: key {key_id} belongs to {key_nation.value}, not {nation.value}",
            )
        try:
            vk.verify(message, signature)
        except (BadSignatureError, ValueError):
            raise ProtocolError(
                ErrorCode.AUTH_FAILED, f"{what}: signature does not verify with key {key_id}"
            ) from None

    def consumer_for(self, token: str | None) -> Consumer:
        if not token:
            raise ProtocolError(
                ErrorCode.AUTH_FAILED,
                "a subscriber token is required (?token=... or Authorization: Bearer)",
            )
        digest = hashlib.sha256(token.encode()).hexdigest()
        for known, consumer in self.token_hashes.items():
            if hmac.compare_digest(known, digest):
                return consumer
        raise ProtocolError(ErrorCode.AUTH_FAILED, "unknown subscriber token")


class ReplayGuard:
    """Refuses a hello nonce or a batch signature seen before, and times outside the window."""

    def __init__(self, window_ns: int = DEFAULT_TIME_WINDOW_NS, remember: int = 4096) -> None:
        self.window_ns = window_ns
        self._seen: OrderedDict[bytes, None] = OrderedDict()
        self._remember = remember

    def check(self, token: bytes, sent_ns_relay: int, now_ns: int, what: str) -> None:
        if abs(now_ns - sent_ns_relay) > self.window_ns:
            raise ProtocolError(
                ErrorCode.REPLAYED,
                f"{what} sent {(now_ns - sent_ns_relay) / 1e9:+.1f} s from now, outside the "
                f"{self.window_ns / 1e9:.0f} s window",
            )
        if token in self._seen:
            raise ProtocolError(ErrorCode.REPLAYED, f"{what} was already received (replayed)")
        self._seen[token] = None
        if len(self._seen) > self._remember:
            self._seen.popitem(last=False)


def init_keys(
    directory: str | Path, consumers: tuple[tuple[str, Nation], ...] | None = None
) -> dict[str, Path]:
    """Create a demo key set: one signing key per nation, a token per consumer, trust.json.

    Private keys and tokens are written mode 0600; the relay needs only trust.json.
    """
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    written: dict[str, Path] = {}
    nodes = []
    for nation in NATIONS:
        sk = SigningKey.generate()
        path = d / f"{nation.value.lower()}.key"
        _write_private(
            path,
            json.dumps(
                {"nation": nation.value, "private_key": base64.b64encode(bytes(sk)).decode()}
            ),
        )
        written[f"{nation.value} key"] = path
        nodes.append(
            {
                "nation": nation.value,
                "key_id": key_id_of(sk.verify_key),
                "public_key": base64.b64encode(bytes(sk.verify_key)).decode(),
            }
        )
    entries = []
    for name, nation in consumers or tuple((f"{n.value.lower()}-ops", n) for n in NATIONS):
        token = secrets.token_urlsafe(32)
        path = d / f"{name}.token"
        _write_private(path, token + "\n")
        written[f"{name} token"] = path
        entries.append(
            {
                "name": name,
                "nation": nation.value,
                "token_sha256": hashlib.sha256(token.encode()).hexdigest(),
            }
        )
    trust = d / "trust.json"
    trust.write_text(json.dumps({"nodes": nodes, "consumers": entries}, indent=2) + "\n")
    written["trust store"] = trust
    return written


def _write_private(path: Path, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
