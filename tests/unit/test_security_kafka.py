"""Kafka security settings reach aiokafka as they should, and credentials stay out of sight."""

from __future__ import annotations

import ssl

import pytest
from support.pki import CertificateAuthority

from siscom.config import Settings
from siscom.pipeline.kafka import consumer_options


def options(**environ: str) -> dict[str, object]:
    return consumer_options(Settings.from_env(environ, env_file=None))


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    ca = CertificateAuthority(tmp_path_factory.mktemp("pki"))
    return ca, ca.issue("client", ip=None)


def test_plaintext_passes_no_credentials_and_no_tls():
    given = options()
    assert given["security_protocol"] == "PLAINTEXT"
    assert not {"sasl_mechanism", "sasl_plain_username", "sasl_plain_password", "ssl_context"} & given.keys()


@pytest.mark.parametrize("mechanism", ["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"])
def test_sasl_plaintext_passes_mechanism_and_credentials_without_tls(mechanism):
    given = options(
        KAFKA_SECURITY_PROTOCOL="SASL_PLAINTEXT",
        KAFKA_SASL_MECHANISM=mechanism,
        KAFKA_USERNAME="gateway",
        KAFKA_PASSWORD="p@ss word",
    )
    assert given["security_protocol"] == "SASL_PLAINTEXT"
    assert given["sasl_mechanism"] == mechanism
    assert (given["sasl_plain_username"], given["sasl_plain_password"]) == ("gateway", "p@ss word")
    assert "ssl_context" not in given


def test_sasl_ssl_passes_credentials_and_a_verifying_tls_context(pki):
    ca, _ = pki
    given = options(
        KAFKA_SECURITY_PROTOCOL="SASL_SSL",
        KAFKA_SASL_MECHANISM="SCRAM-SHA-512",
        KAFKA_USERNAME="gateway",
        KAFKA_PASSWORD="secret",
        KAFKA_SSL_CAFILE=str(ca.cert),
    )
    assert given["sasl_mechanism"] == "SCRAM-SHA-512"
    context = given["ssl_context"]
    assert isinstance(context, ssl.SSLContext)
    assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname
    assert [cert["subject"] for cert in context.get_ca_certs()] == [((("commonName", "test-ca"),),)]


def test_ssl_trusts_the_system_store_without_a_ca_file():
    context = options(KAFKA_SECURITY_PROTOCOL="SSL")["ssl_context"]
    assert isinstance(context, ssl.SSLContext)
    assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname
    assert context.minimum_version in (ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3)


def test_ssl_with_a_client_certificate_loads_it_for_mutual_tls(pki):
    ca, client = pki
    given = options(
        KAFKA_SECURITY_PROTOCOL="SSL",
        KAFKA_SSL_CAFILE=str(ca.cert),
        KAFKA_SSL_CERTFILE=str(client.cert),
        KAFKA_SSL_KEYFILE=str(client.key),
    )
    assert isinstance(given["ssl_context"], ssl.SSLContext)
    assert "sasl_plain_password" not in given


def test_the_password_is_not_in_the_settings_repr():
    settings = Settings.from_env(
        {"KAFKA_SECURITY_PROTOCOL": "SASL_SSL", "KAFKA_USERNAME": "gateway", "KAFKA_PASSWORD": "tr0ub4dor&3"},
        env_file=None,
    )
    assert "tr0ub4dor&3" not in repr(settings)
