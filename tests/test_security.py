"""Signed feeds, replay protection, subscriber tokens, releasability and TLS, on a real relay."""

from __future__ import annotations

import asyncio
import datetime as dt
import ssl
import time

import httpx
import pytest
import websockets
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from nacl.signing import SigningKey

from tests.conftest import start_relay
from tests.synth import ballistic_arc, national_reports
from warnshare.auth import NodeKey, TrustStore, batch_message, init_keys
from warnshare.node import NodePublisher
from warnshare.protocol import (
    AlertBatch,
    CloseCode,
    ErrorCode,
    ErrorMessage,
    Nation,
    ReportBatch,
    SignedBatch,
    decode_relay_to_node,
    decode_relay_to_subscriber,
    encode,
)
from warnshare.relay.app import RelayConfig

STATES = ballistic_arc(38.5, 127.5, 100, 5000, 40, 30)


@pytest.fixture
def keys(tmp_path):
    init_keys(tmp_path)
    return tmp_path


@pytest.fixture
def secure_relay(keys):
    running = start_relay(RelayConfig(trust=TrustStore.load(keys / "trust.json")))
    try:
        yield running
    finally:
        running.stop()


def key(keys, nation: Nation) -> NodeKey:
    return NodeKey.load(keys / f"{nation.value.lower()}.key")


async def publish(
    url: str, nation: Nation, node_key: NodeKey | None, reports, node_id: str | None = None
) -> NodePublisher:
    pub = NodePublisher(url, nation, node_id or f"{nation.value.lower()}-sec", key=node_key)
    pub.submit(reports)
    pub.task = asyncio.create_task(pub.run())
    return pub


async def stop(pub: NodePublisher) -> None:
    pub.task.cancel()
    await asyncio.gather(pub.task, return_exceptions=True)


async def refusal(url: str, frames: list[bytes]) -> tuple[ErrorMessage | None, int]:
    error = None
    try:
        async with websockets.connect(f"{url}/v1/ingest") as ws:
            for f in frames:
                await ws.send(f)
            while True:
                msg = decode_relay_to_node(await asyncio.wait_for(ws.recv(), 5))
                if isinstance(msg, ErrorMessage):
                    error = msg
    except websockets.ConnectionClosed as exc:
        return error, exc.rcvd.code if exc.rcvd else -1
    raise AssertionError("not closed")


async def test_signed_node_is_accepted_and_forgeries_are_refused(secure_relay, keys) -> None:
    url = secure_relay.ws_url
    reports = national_reports(STATES, Nation.JPN, track_number=3)
    pub = await publish(url, Nation.JPN, key(keys, Nation.JPN), reports)
    assert await pub.wait_acked(10)
    await stop(pub)

    # unsigned
    unsigned = NodePublisher(url, Nation.KOR, "kor-x")
    err, code = await refusal(url, [encode(unsigned._hello())])
    assert err.code == ErrorCode.AUTH_FAILED and code == CloseCode.AUTH_FAILED
    # a key nobody trusts, claiming a trusted key id
    rogue = NodeKey(Nation.KOR, SigningKey.generate())
    forger = NodePublisher(url, Nation.KOR, "kor-x", key=rogue)
    hello = forger._hello().model_copy(
        update={
            "auth": forger._hello().auth.model_copy(update={"key_id": key(keys, Nation.KOR).key_id})
        }
    )
    err, code = await refusal(url, [encode(hello)])
    assert err.code == ErrorCode.AUTH_FAILED and code == CloseCode.AUTH_FAILED
    # Japan's key speaking for Korea
    jpn_key = key(keys, Nation.JPN)
    spoof = NodePublisher(url, Nation.JPN, "kor-y", key=jpn_key)
    spoof.nation = Nation.KOR
    err, code = await refusal(url, [encode(spoof._hello())])
    assert err.code == ErrorCode.NATION_MISMATCH and code == CloseCode.NATION_MISMATCH
    # a valid hello, then a batch whose payload was altered after signing
    good = NodePublisher(url, Nation.KOR, "kor-z", key=key(keys, Nation.KOR))
    kor = national_reports(STATES, Nation.KOR, track_number=9)[:3]
    frame = SignedBatch.model_validate(
        decode_relay_to_node_frame(
            good._batch_frame(ReportBatch(sent_ns=time.time_ns(), reports=kor))
        )
    )
    tampered_payload = encode(
        ReportBatch(
            sent_ns=time.time_ns(),
            reports=national_reports(STATES, Nation.KOR, track_number=66)[:3],
        )
    )
    tampered = encode(frame.model_copy(update={"payload": tampered_payload}))
    err, code = await refusal(url, [encode(good._hello()), tampered])
    assert err.code == ErrorCode.AUTH_FAILED and code == CloseCode.AUTH_FAILED
    assert (
        secure_relay.relay.nodes.links.get("kor-z") is None
        or secure_relay.relay.nodes.links["kor-z"].accepted == 0
    )

    async with httpx.AsyncClient(base_url=secure_relay.http_url) as http:
        metrics = (await http.get("/metrics")).text
    assert 'warnshare_frames_rejected_total{code="AUTH_FAILED"} 3.0' in metrics
    assert secure_relay.relay.nodes.links["jpn-sec"].accepted == len(reports)


def decode_relay_to_node_frame(frame: bytes) -> dict:
    from warnshare.protocol import unpack

    return unpack(frame)


async def test_replayed_and_stale_frames_are_refused(secure_relay, keys) -> None:
    url = secure_relay.ws_url
    node = NodePublisher(url, Nation.USA, "usa-rp", key=key(keys, Nation.USA))
    reports = national_reports(STATES, Nation.USA, track_number=1)[:5]
    batch_frame = node._batch_frame(ReportBatch(sent_ns=time.time_ns(), reports=reports))
    async with websockets.connect(f"{url}/v1/ingest") as ws:
        await ws.send(encode(node._hello()))
        await ws.recv()
        await ws.send(batch_frame)
        while decode_relay_to_node(await ws.recv()).type != "ack":
            pass
    # the same signed frame captured and sent again
    err, code = await refusal(url, [encode(node._hello()), batch_frame])
    assert err.code == ErrorCode.REPLAYED and code == CloseCode.REPLAYED
    # a hello signed long ago
    node.clock = lambda: time.time_ns() - 120_000_000_000
    err, code = await refusal(url, [encode(node._hello())])
    assert err.code == ErrorCode.REPLAYED and code == CloseCode.REPLAYED
    assert secure_relay.relay.nodes.links["usa-rp"].accepted == 5


async def test_a_captured_hello_stays_refused_however_many_batches_follow(secure_relay, keys) -> None:
    # Hello nonces and batch signatures shared one memory of 4,096 per node id: a node sending
    # more batches than that within the 30 s window flushed its hello's nonce, and the captured
    # hello, replayed, was welcomed and took the node's connection over (SUPERSEDED).
    url = secure_relay.ws_url
    node = NodePublisher(url, Nation.USA, "usa-flood", key=key(keys, Nation.USA))
    report = national_reports(STATES, Nation.USA, track_number=1)[:1]
    hello = encode(node._hello())
    async with websockets.connect(f"{url}/v1/ingest", max_queue=None) as ws:
        await ws.send(hello)
        await ws.recv()
        for _ in range(4_200):  # one report, acked by the first; the rest are duplicates
            await ws.send(node._batch_frame(ReportBatch(sent_ns=time.time_ns(), reports=report)))
        link = secure_relay.relay.nodes.links["usa-flood"]
        deadline = time.monotonic() + 60
        while link.duplicates < 4_199 and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        # (welcomed, the replay would be kept open and sent clock requests: hence the time-out)
        err, code = await asyncio.wait_for(refusal(url, [hello]), 10)
        assert err is not None and err.code == ErrorCode.REPLAYED and code == CloseCode.REPLAYED
        await ws.ping()  # the honest connection is still the node's
    assert (link.accepted, link.duplicates) == (1, 4_199)


async def listen(url: str, token: str | None, n_frames_timeout: float = 3.0) -> list:
    headers = {"Authorization": f"Bearer {token}"} if token else None
    got = []
    async with websockets.connect(f"{url}/v1/alerts", additional_headers=headers) as ws:
        await ws.recv()
        try:
            while True:
                msg = decode_relay_to_subscriber(
                    await asyncio.wait_for(ws.recv(), n_frames_timeout)
                )
                if isinstance(msg, AlertBatch):
                    got.extend(msg.alerts)
        except TimeoutError:
            pass
    return got


async def test_subscribers_need_a_token_and_see_only_what_is_releasable_to_them(
    secure_relay, keys
) -> None:
    url = secure_relay.ws_url
    async with websockets.connect(f"{url}/v1/alerts") as ws:
        msg = decode_relay_to_subscriber(await ws.recv())
        assert isinstance(msg, ErrorMessage) and msg.code == ErrorCode.AUTH_FAILED
    # Korea shares this track with the USA only (REL TO USA, KOR)
    kor = [
        r.model_copy(update={"releasable_to": [Nation.USA, Nation.KOR]})
        for r in national_reports(STATES, Nation.KOR, track_number=4)
    ]
    pub = await publish(url, Nation.KOR, key(keys, Nation.KOR), kor)
    assert await pub.wait_acked(10)
    await stop(pub)
    tokens = {n: (keys / f"{n.value.lower()}-ops.token").read_text().strip() for n in Nation}
    seen = {n: await listen(url, tokens[n], 1.0) for n in Nation}
    assert seen[Nation.KOR] and seen[Nation.USA]
    assert seen[Nation.JPN] == []
    for n in (Nation.KOR, Nation.USA):
        assert all(n in a.releasable_to for a in seen[n])
    async with websockets.connect(f"{url}/v1/alerts?token=wrong") as ws:
        msg = decode_relay_to_subscriber(await ws.recv())
        assert msg.code == ErrorCode.AUTH_FAILED


def _self_signed(tmp_path):
    k = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = dt.datetime.now(dt.UTC)
    import ipaddress

    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(k.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .sign(k, hashes.SHA256())
    )
    cert_path, key_path = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        k.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


async def test_wss_with_given_certificates(tmp_path) -> None:
    cert, key_file = _self_signed(tmp_path)
    running = start_relay(RelayConfig(), ssl_certfile=str(cert), ssl_keyfile=str(key_file))
    try:
        ctx = ssl.create_default_context(cafile=str(cert))
        pub = NodePublisher(running.ws_url, Nation.JPN, "jpn-tls", ssl_context=ctx)
        reports = national_reports(STATES, Nation.JPN, track_number=2)
        pub.submit(reports)
        pub.task = asyncio.create_task(pub.run())
        assert await pub.wait_acked(10)
        await stop(pub)
        async with websockets.connect(f"{running.ws_url}/v1/alerts", ssl=ctx) as ws:
            await ws.recv()
            assert decode_relay_to_subscriber(await asyncio.wait_for(ws.recv(), 5)).alerts
        with pytest.raises(ssl.SSLError):  # an untrusted certificate is refused
            async with websockets.connect(
                f"{running.ws_url}/v1/alerts", ssl=ssl.create_default_context()
            ):
                pass
    finally:
        running.stop()


def test_batch_signature_binds_the_node_id(keys) -> None:
    k = key(keys, Nation.JPN)
    trust = TrustStore.load(keys / "trust.json")
    sig = k.sign(batch_message("jpn-1", b"payload"))
    trust.verify_batch(Nation.JPN, k.key_id, "jpn-1", b"payload", sig)
    from warnshare.protocol import ProtocolError

    with pytest.raises(ProtocolError):
        trust.verify_batch(Nation.JPN, k.key_id, "jpn-2", b"payload", sig)
