"""The security settings: their defaults, what they refuse, and that secrets never show."""

from __future__ import annotations

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from support.pki import CertificateAuthority
from support.settings import error_for, load

SECRET = "a-secret-that-is-at-least-32-chars"


def public_pem(private_key) -> str:
    return (
        private_key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )


def test_out_of_the_box_streams_are_open_to_any_origin_with_a_total_cap_only():
    settings = load()
    assert settings.stream_jwt_secret is None and settings.stream_jwt_public_key is None
    assert settings.stream_allowed_origins == ("*",)
    assert settings.stream_max_connections == 10000
    assert settings.stream_max_connections_per_ip == 0


def test_a_short_jwt_secret_is_refused_without_echoing_it():
    error = error_for(STREAM_JWT_SECRET="short-secret")
    assert error.variable == "STREAM_JWT_SECRET"
    assert "short-secret" not in str(error) and "***" in str(error)
    assert "32" in error.allowed


def test_the_jwt_secret_never_shows_in_the_settings_repr():
    assert SECRET not in repr(load(STREAM_JWT_SECRET=SECRET))


def test_a_public_key_is_taken_as_pem_text_or_as_a_path(tmp_path):
    pem = public_pem(ec.generate_private_key(ec.SECP256R1()))
    path = tmp_path / "key.pem"
    path.write_text(pem)
    assert load(STREAM_JWT_PUBLIC_KEY=str(path)).stream_jwt_public_key == pem
    assert load(STREAM_JWT_PUBLIC_KEY=pem).stream_jwt_public_key.strip() == pem.strip()


@pytest.mark.parametrize(
    "value",
    ["/no/such/key.pem", "-----BEGIN PUBLIC KEY-----\ngarbage\n-----END PUBLIC KEY-----", "hunter2"],
)
def test_a_public_key_that_is_not_one_is_refused(value):
    assert error_for(STREAM_JWT_PUBLIC_KEY=value).variable == "STREAM_JWT_PUBLIC_KEY"


def test_a_weak_rsa_key_is_refused():
    weak = public_pem(rsa.generate_private_key(public_exponent=65537, key_size=1024))
    assert error_for(STREAM_JWT_PUBLIC_KEY=weak).variable == "STREAM_JWT_PUBLIC_KEY"


def test_a_secret_and_a_public_key_together_are_refused():
    pem = public_pem(ec.generate_private_key(ec.SECP256R1()))
    error = error_for(STREAM_JWT_SECRET=SECRET, STREAM_JWT_PUBLIC_KEY=pem)
    assert error.variable == "STREAM_JWT_PUBLIC_KEY"
    assert SECRET not in str(error)


@pytest.mark.parametrize("variable", ["STREAM_JWT_AUDIENCE", "STREAM_JWT_ISSUER"])
def test_audience_or_issuer_without_a_key_is_refused_rather_than_ignored(variable):
    error = error_for(**{variable: "fleet"})
    assert error.variable == variable
    assert "STREAM_JWT_SECRET" in error.allowed
    assert load(**{variable: "fleet", "STREAM_JWT_SECRET": SECRET}) is not None


def test_allowed_origins_are_normalized():
    settings = load(STREAM_ALLOWED_ORIGINS=" https://Fleet.Example.com:443 , http://127.0.0.1:8000 ")
    assert settings.stream_allowed_origins == ("https://fleet.example.com", "http://127.0.0.1:8000")


@pytest.mark.parametrize(
    "value", ["fleet.example.com", "https://fleet.example.com/map", "ftp://x", "null", "https://u:p@x", ","]
)
def test_allowed_origins_must_be_bare_http_origins(value):
    assert error_for(STREAM_ALLOWED_ORIGINS=value).variable == "STREAM_ALLOWED_ORIGINS"


@pytest.mark.parametrize("variable", ["STREAM_MAX_CONNECTIONS", "STREAM_MAX_CONNECTIONS_PER_IP"])
def test_connection_limits_take_zero_for_none_and_refuse_negatives(variable):
    assert getattr(load(**{variable: "0"}), variable.lower()) == 0
    assert getattr(load(**{variable: "25"}), variable.lower()) == 25
    assert error_for(**{variable: "-1"}).variable == variable


# -- Kafka TLS files -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    """A CA certificate, a client certificate with its key, and a file that only looks like PEM."""
    folder = tmp_path_factory.mktemp("pki")
    ca = CertificateAuthority(folder)
    client = ca.issue("client", ip=None)
    (folder / "junk.pem").write_text("-----BEGIN CERTIFICATE-----\nnot base64\n-----END CERTIFICATE-----\n")
    other_key = CertificateAuthority(folder / "other").issue("other", ip=None).key
    return {"ca": ca.cert, "cert": client.cert, "key": client.key, "junk": folder / "junk.pem", "other_key": other_key}


def test_tls_files_that_load_are_accepted_with_a_tls_protocol(pki):
    settings = load(
        KAFKA_SECURITY_PROTOCOL="SSL",
        KAFKA_SSL_CAFILE=str(pki["ca"]),
        KAFKA_SSL_CERTFILE=str(pki["cert"]),
        KAFKA_SSL_KEYFILE=str(pki["key"]),
    )
    assert settings.kafka_ssl_cafile == str(pki["ca"])


def test_a_ca_file_that_is_not_a_certificate_stops_the_start(pki):
    error = error_for(KAFKA_SECURITY_PROTOCOL="SSL", KAFKA_SSL_CAFILE=str(pki["junk"]))
    assert error.variable == "KAFKA_SSL_CAFILE"


def test_a_client_certificate_without_its_key_stops_the_start(pki):
    error = error_for(KAFKA_SECURITY_PROTOCOL="SSL", KAFKA_SSL_CERTFILE=str(pki["cert"]))
    assert error.variable == "KAFKA_SSL_CERTFILE"
    error = error_for(
        KAFKA_SECURITY_PROTOCOL="SSL",
        KAFKA_SSL_CERTFILE=str(pki["cert"]),
        KAFKA_SSL_KEYFILE=str(pki["other_key"]),  # a key, but not this certificate's
    )
    assert error.variable == "KAFKA_SSL_CERTFILE"


def test_a_key_file_without_a_certificate_stops_the_start(pki):
    error = error_for(KAFKA_SECURITY_PROTOCOL="SSL", KAFKA_SSL_KEYFILE=str(pki["key"]))
    assert error.variable == "KAFKA_SSL_CERTFILE"
