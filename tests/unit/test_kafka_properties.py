"""--kafka-config: the properties syntax, the one mapping table, secrets that never print."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner
from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer

from imgstream.cli import cli
from imgstream.cli.app import Redactor
from imgstream.errors import ConfigError
from imgstream.kafka_io import (
    PROPERTIES,
    ClientSettings,
    Secret,
    client_config,
    load_client_settings,
)
from imgstream.kafka_io.config.properties import parse_jaas, parse_properties

TLS = Path(__file__).parents[1] / "data" / "tls"
SCRAM = "org.apache.kafka.common.security.scram.ScramLoginModule"


def _load(tmp_path: Path, text: str) -> ClientSettings:
    path = tmp_path / "client.properties"
    path.write_text(text, encoding="utf-8")
    return load_client_settings(str(path), 4.0)


def _refused(tmp_path: Path, text: str) -> str:
    with pytest.raises(ConfigError) as info:
        _load(tmp_path, text)
    message = str(info.value)
    assert "\n" not in message and str(tmp_path / "client.properties") in message
    assert info.value.exit_code == 2
    return message


# -- the syntax ----------------------------------------------------------------------


def test_the_properties_syntax_is_javas() -> None:
    text = (
        "# a comment\n"
        "! another\n"
        "\n"
        "  a=1\n"
        "b : two words  \n"
        "c 3\n"
        "d=x\\\n"
        "   y\\\n"
        "   z\n"
        "e=tab\\there\\u00e9\n"
        "f\\=g=h\n"
        "empty=\n"
        "a=last wins\n"
    )
    got = [(line.number, line.key, line.value) for line in parse_properties(text)]
    assert got == [
        (4, "a", "1"),
        (5, "b", "two words  "),
        (6, "c", "3"),
        (7, "d", "xyz"),
        (10, "e", "tab\there\u00e9"),
        (11, "f=g", "h"),
        (12, "empty", ""),
        (13, "a", "last wins"),
    ]


def test_a_continued_line_is_not_a_comment_and_an_escaped_backslash_does_not_continue() -> None:
    got = parse_properties("a=1\\\n#not a comment\nb=c:\\\\\nd=2\n")
    assert [(x.key, x.value) for x in got] == [("a", "1#not a comment"), ("b", "c:\\"), ("d", "2")]


def test_jaas_lines_give_the_module_and_its_options() -> None:
    module, options = parse_jaas(
        f'{SCRAM} required username="alice" password="p\\"w;d" tokenauth=false;'
    )
    assert module == SCRAM
    assert options == {"username": "alice", "password": 'p"w;d', "tokenauth": "false"}
    for bad in (f'{SCRAM} required username="a"', "username=a;", f"{SCRAM} required; x"):
        with pytest.raises(ValueError):
            parse_jaas(bad)


# -- secrets -------------------------------------------------------------------------


def test_a_secret_is_the_value_for_libraries_and_stars_for_people() -> None:
    s = Secret("hunter2")
    assert s == "hunter2" and s.encode("utf-8") == b"hunter2"
    assert "\0".join(["u", "u", s]).encode() == b"u\0u\0hunter2"  # SASL PLAIN's token
    logged = "%s %r" % (s, s)  # noqa: UP031 - the way logging formats
    assert "hunter2" not in repr(s) + str(s) + f"{s}" + f"{s:>10}" + logged
    assert "hunter2" not in repr({"sasl_plain_password": s})  # kafka-python logs its config so


def test_settings_and_client_configs_print_no_password(tmp_path) -> None:
    settings = _load(
        tmp_path,
        "security.protocol=SASL_SSL\nsasl.mechanism=SCRAM-SHA-512\n"
        f"sasl.username=alice\nsasl.password=hunter2\nssl.ca.location={TLS / 'ca.pem'}\n",
    )
    assert settings.secrets() == ["hunter2"]
    conf = client_config("admin", KafkaAdminClient.DEFAULT_CONFIG, "h:1", settings)
    assert conf["sasl_plain_password"] == "hunter2"  # what the client library gets
    assert "hunter2" not in repr(settings) + repr(conf) + str(conf)


def test_the_log_redactor_masks_values_in_messages_bytes_and_tracebacks() -> None:
    redactor = Redactor()
    redactor.add(["hunter2", "pa'ss\\w"])
    record = logging.LogRecord("kafka", logging.DEBUG, __file__, 1, "token %s / %r", None, None)
    record.args = (b"\x00alice\x00hunter2", "x pa'ss\\w y")
    assert redactor.filter(record)
    assert "hunter2" not in record.getMessage() and "pa'ss" not in record.getMessage()
    assert "***" in record.getMessage()
    try:
        raise RuntimeError("failed with hunter2")
    except RuntimeError:
        failed = logging.LogRecord("x", logging.ERROR, __file__, 1, "boom", (), sys.exc_info())
    redactor.filter(failed)
    assert failed.exc_text and "hunter2" not in failed.exc_text


# -- the table -----------------------------------------------------------------------


def test_a_sasl_ssl_file_maps_to_kafka_python_names(tmp_path) -> None:
    settings = _load(
        tmp_path,
        "bootstrap.servers = k1:9093, k2:9093\n"
        "security.protocol=sasl_ssl\n"
        "sasl.mechanism=SCRAM-SHA-512\n"
        f'sasl.jaas.config={SCRAM} required username="alice" password="hunter2";\n'
        f"ssl.truststore.location={TLS / 'ca.pem'}\n"
        "ssl.truststore.type=PEM\n"
        f"ssl.certificate.location={TLS / 'client.pem'}\n"
        f"ssl.key.location={TLS / 'client.key'}\n"
        "ssl.key.password=keypass\n"
        "ssl.endpoint.identification.algorithm=\n"
        "client.id=cam-7\n"
        "request.timeout.ms=15000\n"
        "compression.type=gzip\n",
    )
    assert settings.bootstrap == "k1:9093,k2:9093"
    assert settings.connect_timeout_s == 4.0
    assert dict(settings.properties) == {
        "security_protocol": "SASL_SSL",
        "sasl_mechanism": "SCRAM-SHA-512",
        "sasl_plain_username": "alice",
        "sasl_plain_password": "hunter2",
        "ssl_cafile": str(TLS / "ca.pem"),
        "ssl_certfile": str(TLS / "client.pem"),
        "ssl_keyfile": str(TLS / "client.key"),
        "ssl_password": "keypass",
        "ssl_check_hostname": False,
        "client_id": "cam-7",
        "request_timeout_ms": 15000,
        "compression_type": "gzip",
    }
    assert isinstance(settings.properties["ssl_password"], Secret)


def test_every_target_is_a_setting_some_client_knows() -> None:
    known = set(KafkaConsumer.DEFAULT_CONFIG) | set(KafkaProducer.DEFAULT_CONFIG)
    known |= set(KafkaAdminClient.DEFAULT_CONFIG)
    targets = {p.target for p in PROPERTIES.values() if p.target}
    assert targets <= known, targets - known


def test_the_users_client_id_wins_and_correctness_settings_stay_imgstreams(tmp_path) -> None:
    settings = _load(tmp_path, "client.id=quota-7\nsession.timeout.ms=9000\n")
    conf = client_config(
        "consumer", KafkaConsumer.DEFAULT_CONFIG, "h:1", settings, client_id="w-1", group_id="g"
    )
    assert conf["client_id"] == "quota-7"
    assert conf["session_timeout_ms"] == 9000
    assert conf["enable_auto_commit"] is False


def test_no_file_means_no_properties() -> None:
    assert load_client_settings(None, 3.0) == ClientSettings(3.0)


@pytest.mark.parametrize(
    ("text", "named"),
    [
        ("sasl.mechansim=PLAIN\n", "did you mean 'sasl.mechanism'"),
        ("x.y.z=1\n", "accepted: allow.auto.create.topics"),
        ("group.id=mine\n", "use --group"),
        ("acks=1\n", "acks=all"),
        ("ssl.truststore.password=changeit\n", "PEM"),
        ("request.timeout.ms=soon\n", "not an integer"),
        ("max.in.flight.requests.per.connection=6\n", "between 1 and 5"),
        ("security.protocol=TLS\n", "must be one of PLAINTEXT, SSL"),
        ("check.crcs=yes\n", "true or false"),
        ("ssl.truststore.type=JKS\n", "only PEM"),
        ("security.protocol=SSL\nssl.ca.location=/no/such.pem\n", "no such file"),
        ("sasl.username=alice\n", "sasl.username needs a SASL security.protocol"),
        ("ssl.ca.location={tls}/ca.pem\n", "ssl.ca.location needs a SSL security.protocol"),
        ("security.protocol=SASL_SSL\n", "sasl.mechanism is required"),
        ("security.protocol=SASL_PLAINTEXT\nsasl.mechanism=PLAIN\nsasl.username=a\n", "sasl.pass"),
        ("security.protocol=SSL\nssl.ca.location={tls}/client.key\n", "no PEM certificate"),
        (
            "security.protocol=SSL\nssl.certificate.location={tls}/client.pem\n"
            "ssl.key.location={tls}/client.key\nssl.key.password=wrong\n",
            "wrong ssl.key.password",
        ),
        ("security.protocol=SSL\nssl.key.location={tls}/client.key\n", "needs ssl.certificate"),
        (
            "security.protocol=SASL_SSL\nsasl.mechanism=PLAIN\n"
            f'sasl.jaas.config={SCRAM} required username="a" password="b";\n',
            "ScramLoginModule does not do sasl.mechanism=PLAIN",
        ),
        (
            "security.protocol=SASL_SSL\nsasl.mechanism=PLAIN\nsasl.username=a\n"
            'sasl.jaas.config=x.Y required username="a" password="b";\n',
            "login module x.Y is not supported",
        ),
        (
            "security.protocol=SASL_SSL\nsasl.mechanism=SCRAM-SHA-256\n"
            "sasl.username=a,b\nsasl.password=p\n",
            "does not escape",
        ),
        ("e=\\u12\n", "bad unicode escape"),
    ],
)
def test_a_bad_file_is_one_line_naming_the_file_and_the_key(tmp_path, text, named) -> None:
    message = _refused(tmp_path, text.format(tls=TLS))
    assert named in message, message


def test_a_bad_line_is_named_by_its_number(tmp_path) -> None:
    assert "line 3: fetch.min.bytes" in _refused(tmp_path, "# x\nlinger.ms=1\nfetch.min.bytes=0\n")


def test_a_password_in_a_bad_file_is_not_echoed(tmp_path) -> None:
    message = _refused(tmp_path, "sasl.password=hunter2\n")
    assert "hunter2" not in message


# -- the CLI -------------------------------------------------------------------------


def test_every_kafka_command_takes_the_file_and_its_environment_variable() -> None:
    def commands(group):
        for cmd in group.commands.values():
            yield from commands(cmd) if hasattr(cmd, "commands") else [cmd]

    talking = [c for c in commands(cli) if any("--bootstrap" in p.opts for p in c.params)]
    assert {c.name for c in talking} >= {
        "run",
        "work",
        "produce",
        "capture",
        "replay",
        "status",
        "reset",
        "aggregate",
    }
    for command in talking:
        option = next(p for p in command.params if "--kafka-config" in p.opts)
        assert option.envvar == "IMGSTREAM_KAFKA_CONFIG", command.name


@pytest.mark.parametrize(
    "args",
    [
        ["status"],
        ["offsets", "reset", "--group", "g", "--to-earliest"],
        ["produce", "x.png"],
        ["work", "--out", "o"],
    ],
)
def test_a_bad_file_stops_any_command_with_exit_2_before_it_connects(tmp_path, args) -> None:
    bad = tmp_path / "bad.properties"
    bad.write_text("bootstrap.servers=127.0.0.1:9\nsasl.pasword=hunter2\n")
    result = CliRunner().invoke(cli, args, env={"IMGSTREAM_KAFKA_CONFIG": str(bad)})
    assert result.exit_code == 2, result.output
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and "sasl.pasword" in lines[0] and str(bad) in lines[0], lines
    assert "hunter2" not in result.output


def test_bootstrap_servers_in_the_file_stands_in_for_the_flag(tmp_path) -> None:
    from imgstream.cli.options import build_config

    props = tmp_path / "c.properties"
    props.write_text("bootstrap.servers=k1:9092,k2:9092\n")
    config = build_config({"kafka_config": str(props), "out_dir": "o"})
    assert config.bootstrap == "k1:9092,k2:9092"
    assert config.kafka_config == str(props)
    flagged = build_config({"kafka_config": str(props), "out_dir": "o", "bootstrap": "b:1"})
    assert flagged.bootstrap == "b:1"


def test_without_any_bootstrap_a_command_says_where_it_may_come_from(tmp_path) -> None:
    result = CliRunner().invoke(cli, ["status"])
    assert result.exit_code == 2
    assert "bootstrap.servers in --kafka-config" in result.stderr


def test_run_refuses_a_secured_file_without_a_cluster(tmp_path) -> None:
    props = tmp_path / "c.properties"
    props.write_text(f"security.protocol=SSL\nssl.ca.location={TLS / 'ca.pem'}\n")
    result = CliRunner().invoke(
        cli, ["run", str(tmp_path), "--out", str(tmp_path / "o"), "--kafka-config", str(props)]
    )
    assert result.exit_code == 2, result.output
    assert "embedded broker speaks PLAINTEXT" in result.stderr
