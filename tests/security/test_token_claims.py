"""A correctly signed token with absurd claims is an auth failure, not a crash.

The signature only proves who minted a token. A backend bug that signs ``"exp": 10**400`` used to
raise OverflowError inside the route: a traceback at ERROR, a close 1000 without an error frame,
and nothing counted. Each such token must now get an error frame and 1008, counted in
``auth_failures``, and leave the log free of tracebacks.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
import uuid

from chaos.rawws import RawWebSocket
from support.status import stats, wait_ready

SECRET = "security-secret-" + uuid.uuid4().hex


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def signed(payload_json: str) -> str:
    header = _b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    signing_input = f"{header}.{_b64(payload_json.encode())}".encode()
    signature = hmac.new(SECRET.encode(), signing_input, hashlib.sha256).digest()
    return f"{signing_input.decode()}.{_b64(signature)}"


HOSTILE = {
    "exp 10**400": '{"exp":1' + "0" * 400 + ',"devices":"*"}',
    "exp 1e400 (inf)": '{"exp":1e400,"devices":"*"}',
    "exp NaN": '{"exp":NaN,"devices":"*"}',
    "exp as text": '{"exp":"%d","devices":"*"}' % (time.time() + 300),
    "nbf -10**400": '{"exp":%d,"nbf":-1%s,"devices":"*"}' % (time.time() + 300, "0" * 400),
    "devices nested": '{"exp":%d,"devices":%s}' % (time.time() + 300, "[" * 1500 + "]" * 1500),
    "devices a number": '{"exp":%d,"devices":1e999}' % (time.time() + 300),
}


def _auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def test_signed_tokens_with_hostile_claims_get_an_error_frame_and_1008_and_are_counted(
    make_server, scenario
) -> None:
    scenario.title = "6. hostile token claims"
    scenario.target = "error frame + 1008 each, all counted, no traceback"
    server = make_server(STREAM_JWT_SECRET=SECRET)
    await wait_ready(server)
    good = signed('{"exp":%d,"devices":[]}' % (time.time() + 300))
    before = stats(server, _auth(good))["auth_failures"]
    outcomes = {}
    for name, payload in HOSTILE.items():
        client = await RawWebSocket.connect(server.ws_url(f"/api/v1/stream?token={signed(payload)}"))
        try:
            code, texts = await client.read_until_close(timeout=10)
        finally:
            client.close()
        errors = [json.loads(text)["data"]["message"] for text in texts if json.loads(text)["event"] == "error"]
        outcomes[name] = (code, errors)
        scenario.figure(name, f"close {code}, error frame: {errors[0] if errors else None!r}")
    counted = stats(server, _auth(good))["auth_failures"] - before
    scenario.figure("auth_failures counted", f"{counted} of {len(HOSTILE)}")
    assert all(code == 1008 and errors for code, errors in outcomes.values()), outcomes
    assert counted == len(HOSTILE)
    assert "Traceback" not in server.log_text()
