"""Token refresh in the stream core: the notice before expiry, and the client's new token.

Synchronous, as the core is: tokens are real JWTs checked by a real verifier (pure CPU), times
are numbers the test passes. The pump's timers and the real server are covered by the integration
test of the same name.
"""

from __future__ import annotations

import json
import time

import jwt
import pytest

from siscom.core.protocol import parse_client_frame, token_expiring_frame
from siscom.core.stream import Cause, Effects, Refresh, StreamCore, StreamPolicy
from siscom.core.subscriptions import SubscriptionTable
from siscom.security.tokens import TokenVerifier

SECRET = "unit-test-secret-of-at-least-thirty-two-characters"
VERIFIER = TokenVerifier(SECRET.encode(), "HS256")


def mint(devices, *, expires_in: float = 300.0, key: str = SECRET) -> str:
    return jwt.encode({"devices": devices, "exp": int(time.time() + expires_in)}, key, algorithm="HS256")


class Heard(StreamCore):
    """A core that keeps the refresh effects its ``receive`` returns."""

    __slots__ = ("heard",)

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.heard: list[Refresh] = []

    def receive(self, data: str | bytes, now: float) -> Effects | None:
        effects = super().receive(data, now)
        if effects is not None:
            self.heard.extend(effects.refreshes)
        return effects


def make(
    device_ids=frozenset({"a", "b"}), *, devices=("a", "b", "c"), expires_in=100.0, notice=30.0, verify=VERIFIER.verify
) -> tuple[StreamCore, list[Refresh]]:
    """An open core holding a grant of ``devices``; the list collects the refresh effects its
    ``receive`` returns."""
    grant = VERIFIER.verify(mint(list(devices) if devices != "*" else "*", expires_in=expires_in))
    policy = StreamPolicy(
        keepalive_seconds=60.0, max_pending_frames=50, max_device_ids=10, snapshot=False, token_notice_seconds=notice
    )
    core = Heard(device_ids, table=SubscriptionTable(), policy=policy, grant=grant, verify=verify)
    core.open(0.0)
    return core, core.heard


def drain(core: StreamCore) -> list[dict]:
    frames: list[dict] = []
    while texts := core.take(0.0):
        frames += [json.loads(text) for text in texts]
    return frames


def refresh(core: StreamCore, token: str) -> list[dict]:
    core.receive(json.dumps({"action": "refresh", "token": token}), 0.0)
    return drain(core)


# The notice


def test_the_notice_is_due_the_configured_time_before_the_token_expires():
    core, _ = make(expires_in=100.0, notice=30.0)
    now = time.time()
    expires_in = core.expiry_delay(now)
    assert core.notice_delay(now) == pytest.approx(expires_in - 30.0)


def test_a_token_with_less_left_than_the_notice_is_noticed_at_once():
    core, _ = make(expires_in=5.0, notice=30.0)
    assert core.notice_delay(time.time()) == 0.0


def test_no_notice_is_ever_due_with_the_notice_off_or_without_tokens():
    core, _ = make(notice=0.0)
    assert core.notice_delay(time.time()) is None
    tokenless = StreamCore(
        None, table=SubscriptionTable(), policy=StreamPolicy(60.0, 50, 10, False, token_notice_seconds=30.0)
    )
    tokenless.open(0.0)
    assert tokenless.notice_delay(0.0) is None
    tokenless.token_expiring(0.0)
    assert drain(tokenless) == []


def test_the_notice_frame_says_how_many_whole_seconds_the_token_has_left():
    core, _ = make(expires_in=100.0)
    now = time.time()
    left = core.expiry_delay(now)
    core.token_expiring(now)
    assert drain(core) == [{"event": "token-expiring", "data": {"expires_in": int(left)}}]
    assert token_expiring_frame(-3.0) == '{"event":"token-expiring","data":{"expires_in":0}}'


# The client's new token


def test_a_valid_token_granting_the_subscription_moves_the_expiry_and_is_acknowledged():
    core, heard = make(expires_in=10.0)
    now = time.time()
    before = core.expiry_delay(now)
    new = mint(["a", "b"], expires_in=600.0)
    frames = refresh(core, new)
    assert frames == [{"event": "ack", "data": {"action": "refresh", "expires_at": VERIFIER.verify(new).expires_at}}]
    assert core.expiry_delay(now) > before + 500
    assert core.notice_delay(now) == pytest.approx(core.expiry_delay(now) - 30.0)
    assert heard == [Refresh(VERIFIER.verify(new).expires_at)], "the effect carries the new expiry"
    assert core.closing is None


def test_a_token_that_no_longer_grants_a_subscribed_device_is_refused_and_the_old_expiry_stands():
    core, heard = make(expires_in=10.0)
    now = time.time()
    before = core.expiry_delay(now)
    frames = refresh(core, mint(["a"], expires_in=600.0))
    assert frames == [
        {
            "event": "error",
            "data": {"message": "token refresh refused: device ids not allowed by the token", "device_ids": ["b"]},
        }
    ]
    assert core.expiry_delay(now) == before
    assert [r.accepted for r in heard] == [False]
    assert core.closing is None  # the stream goes on until the old expiry
    core.token_expired()
    assert core.closing is not None and core.closing.cause is Cause.TOKEN_EXPIRED


@pytest.mark.parametrize(
    ("token", "reason"),
    [
        (lambda: mint(["a", "b"], key="another-secret-of-at-least-thirty-two-chars"), "token signature not valid"),
        (lambda: mint(["a", "b"], expires_in=-60.0), "token expired"),
        (lambda: "not.a.jwt", "malformed token"),
    ],
    ids=["wrong signature", "expired", "malformed"],
)
def test_an_invalid_token_is_refused_with_the_reason_and_changes_nothing(token, reason):
    core, heard = make(expires_in=10.0)
    now = time.time()
    before = core.expiry_delay(now)
    frames = refresh(core, token())
    assert frames == [{"event": "error", "data": {"message": f"token refresh refused: {reason}"}}]
    assert core.expiry_delay(now) == before
    assert [r.accepted for r in heard] == [False]


def test_a_stream_of_every_device_needs_a_token_for_every_device():
    core, heard = make(None, devices="*")
    assert refresh(core, mint(["a", "b", "c"]))[0]["data"]["message"].startswith("token refresh refused: ")
    assert refresh(core, mint("*"))[0]["data"]["action"] == "refresh"
    assert [r.accepted for r in heard] == [False, True]


def test_the_new_grant_decides_later_subscriptions():
    core, _ = make(expires_in=10.0, devices=("a", "b"))
    refresh(core, mint(["a", "b", "z"]))
    core.receive(json.dumps({"action": "subscribe", "device_ids": ["z"]}), 0.0)
    assert drain(core)[0]["data"] == {"action": "subscribe", "device_ids": ["a", "b", "z"]}
    core.receive(json.dumps({"action": "subscribe", "device_ids": ["c"]}), 0.0)
    assert core.closing is not None and core.closing.cause is Cause.FORBIDDEN


def test_a_refresh_on_a_stream_without_tokens_is_refused():
    core = StreamCore(None, table=SubscriptionTable(), policy=StreamPolicy(60.0, 50, 10, False))
    core.open(0.0)
    assert refresh(core, mint("*")) == [
        {"event": "error", "data": {"message": "token refresh refused: this stream needs no token"}}
    ]


def test_a_refresh_without_a_token_string_is_answered_with_an_error_and_the_stream_stays():
    core, heard = make()
    core.receive(json.dumps({"action": "refresh", "token": 42}), 0.0)
    assert drain(core)[0]["event"] == "error"
    assert core.closing is None
    assert heard == []  # nothing was verified


def test_a_parsed_refresh_never_shows_its_token():
    command = parse_client_frame(json.dumps({"action": "refresh", "token": "secret-token-text"}), max_ids=10)
    assert command is not None and "secret-token-text" not in repr(command)


def test_refreshes_sent_before_the_stream_opened_are_each_returned_in_order_by_the_opening():
    """Messages that came before the opening are applied by it: every refresh among them is an
    effect of its own (each is counted), the accepted one with its new expiry."""
    grant = VERIFIER.verify(mint(["a"], expires_in=100.0))
    policy = StreamPolicy(keepalive_seconds=60.0, max_pending_frames=50, max_device_ids=10, snapshot=False)
    core = StreamCore(frozenset({"a"}), table=SubscriptionTable(), policy=policy, grant=grant, verify=VERIFIER.verify)
    new = mint(["a"], expires_in=600.0)
    assert core.receive(json.dumps({"action": "refresh", "token": mint(["b"])}), 0.0) is None  # held
    assert core.receive(json.dumps({"action": "refresh", "token": new}), 0.0) is None
    effects = core.open(0.0)
    assert effects is not None and effects.closing is None
    assert effects.refreshes == (Refresh(None), Refresh(VERIFIER.verify(new).expires_at))
    assert core.effects() is None
