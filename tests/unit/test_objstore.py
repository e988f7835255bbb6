"""s3:// URIs, roots, AWS settings and error mapping: no server needed."""

from __future__ import annotations

import errno
from pathlib import Path

import click
import pytest
from obstore import exceptions as obx

from imgstream.cli.options import LOCATION, build_config
from imgstream.config import WorkerConfig
from imgstream.errors import ConfigError, ImageError
from imgstream.io.awsconfig import aws_settings, check_endpoint
from imgstream.io.objstore import (
    ObjectInfo,
    ObjectStore,
    S3Url,
    image_error,
    is_s3,
    os_error,
    parse_s3,
)
from imgstream.io.stores import Inputs, S3Inputs, join, local_dir
from imgstream.producers.objects import default_source, folder, object_id


def test_parse_s3_splits_bucket_and_key() -> None:
    assert parse_s3("s3://photos/in/a.jpg") == S3Url("photos", "in/a.jpg")
    assert parse_s3("S3://photos") == S3Url("photos", "")
    assert parse_s3("s3://photos/in/") == S3Url("photos", "in")
    assert str(S3Url("photos", "in/a.jpg")) == "s3://photos/in/a.jpg"
    assert str(S3Url("photos", "")) == "s3://photos"
    assert S3Url("b", "").child("x/y") == S3Url("b", "x/y")
    assert S3Url("b", "p").child("x") == S3Url("b", "p/x")
    assert is_s3("s3://b") and not is_s3("/data/s3://b") and not is_s3("file:///x")


@pytest.mark.parametrize(
    "uri",
    [
        "s3://",
        "s3:///key",
        "s3://b?x=1/key",
        "s3://b#x/key",
        "s3://../key",
        "s3://b%2F/key",
        "s3://b/in/../secret.jpg",
        "s3://b/..",
        "s3://b/in/./a.jpg",
        "s3://b/in//a.jpg",
        "s3://b/a\x00.jpg",
        "/local/path",
    ],
)
def test_bad_s3_uris_are_forbidden(uri: str) -> None:
    with pytest.raises(ImageError) as err:
        parse_s3(uri)
    assert err.value.type == "forbidden"


def test_a_key_is_under_a_root_by_whole_segments() -> None:
    root = S3Url("b", "in")
    assert S3Url("b", "in/a.jpg").under(root)
    assert S3Url("b", "in/sub/a.jpg").under(root)
    assert not S3Url("b", "inx/a.jpg").under(root)
    assert not S3Url("c", "in/a.jpg").under(root)
    assert S3Url("b", "anything/at/all").under(S3Url("b", ""))


def test_s3_inputs_refuse_refs_outside_every_root() -> None:
    inputs = S3Inputs(ObjectStore({}), [S3Url("b", "in"), S3Url("c", "")], 100)
    assert inputs.check("s3://b/in/a.jpg") == S3Url("b", "in/a.jpg")
    assert inputs.check("s3://c/deep/k.png") == S3Url("c", "deep/k.png")
    for uri in ("s3://b/other/a.jpg", "s3://b/inx", "s3://d/in/a.jpg", "s3://b/in/../x", "s3://c"):
        with pytest.raises(ImageError) as err:
            inputs.check(uri)
        assert err.value.type == "forbidden", uri


def test_a_scheme_without_a_root_is_forbidden(tmp_path: Path) -> None:
    only_local = Inputs((str(tmp_path),), client=ObjectStore({}))
    with pytest.raises(ImageError) as err:
        only_local.read("s3://b/in/a.jpg")
    assert err.value.type == "forbidden"
    only_s3 = Inputs(("s3://b/in",), client=ObjectStore({}))
    (tmp_path / "a.jpg").write_bytes(b"x")
    with pytest.raises(ImageError) as err:
        only_s3.read(str(tmp_path / "a.jpg"))
    assert err.value.type == "forbidden"


def test_aws_settings_environment_first_then_the_shared_files(tmp_path: Path) -> None:
    creds = tmp_path / "credentials"
    creds.write_text(
        "[default]\naws_access_key_id = FILEKEY\naws_secret_access_key = FILESECRET\n"
        "[minio]\naws_access_key_id = MINIOKEY\naws_secret_access_key = MINIOSECRET\n"
        "aws_session_token = TOKEN\n"
    )
    config = tmp_path / "config"
    config.write_text(
        "[default]\nregion = eu-west-1\n"
        "[profile minio]\nregion = us-east-2\nendpoint_url = http://127.0.0.1:9000\n"
    )
    files = {"AWS_SHARED_CREDENTIALS_FILE": str(creds), "AWS_CONFIG_FILE": str(config)}
    assert aws_settings(files) == {
        "access_key_id": "FILEKEY",
        "secret_access_key": "FILESECRET",
        "region": "eu-west-1",
    }
    assert aws_settings({**files, "AWS_PROFILE": "minio"}) == {
        "access_key_id": "MINIOKEY",
        "secret_access_key": "MINIOSECRET",
        "session_token": "TOKEN",
        "region": "us-east-2",
        "endpoint": "http://127.0.0.1:9000",
    }
    env = {
        **files,
        "AWS_PROFILE": "minio",
        "AWS_ACCESS_KEY_ID": "ENVKEY",
        "AWS_SECRET_ACCESS_KEY": "ENVSECRET",
        "AWS_REGION": "ap-south-1",
        "AWS_ENDPOINT_URL": "http://localhost:4566",
    }
    assert aws_settings(env) == {
        "access_key_id": "ENVKEY",
        "secret_access_key": "ENVSECRET",
        "region": "ap-south-1",
        "endpoint": "http://localhost:4566",
    }
    assert aws_settings({**env, "AWS_ENDPOINT_URL_S3": "http://s3only:1"})["endpoint"] == (
        "http://s3only:1"
    )
    missing = {"AWS_SHARED_CREDENTIALS_FILE": "/nonexistent", "AWS_CONFIG_FILE": "/nonexistent"}
    assert aws_settings(missing) == {}


def test_attempts_come_from_aws_max_attempts() -> None:
    assert ObjectStore({"AWS_MAX_ATTEMPTS": "5"}).attempts == 5
    assert ObjectStore({"AWS_MAX_ATTEMPTS": "0"}).attempts == 1
    assert ObjectStore({"AWS_MAX_ATTEMPTS": "many"}).attempts == 3
    assert ObjectStore({}).attempts == 3


def test_store_errors_map_to_failure_types() -> None:
    url = S3Url("b", "k")
    assert image_error(FileNotFoundError("gone"), url).type == "not_found"
    assert image_error(obx.PermissionDeniedError("no"), url).type == "forbidden"
    assert image_error(obx.UnauthenticatedError("no"), url).type == "forbidden"
    assert image_error(obx.GenericError("403 Forbidden: AccessDenied"), url).type == "forbidden"
    assert image_error(obx.GenericError("NoSuchBucket"), url).type == "not_found"
    assert image_error(obx.GenericError("503 Service Unavailable"), url).type == "io_error"
    assert image_error(obx.GenericError("timed out"), url).type == "io_error"
    # writes: every store error is an outage errno for the output gate
    assert os_error(obx.PermissionDeniedError("no"), url).errno == errno.EACCES
    assert os_error(obx.GenericError("NoSuchBucket"), url).errno == errno.ENXIO
    assert os_error(obx.GenericError("503"), url).errno == errno.EIO


def test_root_and_out_accept_directories_and_s3(tmp_path: Path) -> None:
    config = build_config(
        {"out_dir": "s3://b/out", "roots": (str(tmp_path), "s3://b/in"), "bootstrap": "x"}
    ).validate()
    assert config.out_dir == "s3://b/out"
    assert config.roots == (str(tmp_path), "s3://b/in")
    for bad in ({"roots": ("s3://b/../x",)}, {"out_dir": "s3://"}):
        with pytest.raises(ConfigError) as err:
            WorkerConfig(**{"bootstrap": "x", "out_dir": "o", **bad}).validate()
        assert ("--root" if "roots" in bad else "--out") in str(err.value)


def test_imgstream_root_splits_on_colons_but_not_in_s3_uris() -> None:
    split = LOCATION.split_envvar_value
    assert split("/data:/uploads") == ["/data", "/uploads"]
    assert split("s3://b/in:/data:s3://c") == ["s3://b/in", "/data", "s3://c"]
    with pytest.raises(click.BadParameter):
        LOCATION.convert(__file__, None, None)


def test_locations_join_and_local_run_dir(tmp_path: Path) -> None:
    assert join("s3://b/out/", "tiles") == "s3://b/out/tiles"
    assert join(str(tmp_path), "tiles") == str(tmp_path / "tiles")
    assert local_dir(str(tmp_path)) == str(tmp_path)
    assert local_dir("s3://b/out").endswith("imgstream-run")


def test_listed_objects_get_stable_ids_and_sources() -> None:
    info = ObjectInfo(S3Url("b", "cams/front/img 1.jpg"), 10, '"etag"', 0)
    assert object_id(info) == object_id(ObjectInfo(info.url, 10, '"etag"', 5))
    assert object_id(info) != object_id(ObjectInfo(info.url, 10, '"other"', 0))
    assert object_id(info).startswith("img_1-")
    assert default_source(info.url) == "front"
    assert default_source(S3Url("b", "top.jpg")) == "b"
    assert folder(info.url) == S3Url("b", "cams/front")


#: Endpoints that made object_store panic inside a request (pyo3's PanicException, a
#: BaseException that went through every ``except Exception``).
PANICKING_ENDPOINTS = ["::::", "http://[bad", "http://h:99999999", "file:///x"]
KEYS = {"AWS_ACCESS_KEY_ID": "k", "AWS_SECRET_ACCESS_KEY": "s", "AWS_MAX_ATTEMPTS": "1"}


@pytest.mark.parametrize("endpoint", PANICKING_ENDPOINTS)
def test_a_bad_endpoint_fails_reads_as_io_errors_and_writes_as_os_errors(
    endpoint: str, tmp_path: Path
) -> None:
    store = ObjectStore({**KEYS, "AWS_ENDPOINT_URL": endpoint}, timeout_s=2, connect_timeout_s=1)
    url = S3Url("b", "k.jpg")
    for read in (
        lambda: store.get(url, 100),
        lambda: store.size(url),
        lambda: store.head_bytes(url, 10),
        lambda: list(store.list(S3Url("b", ""))),
    ):
        with pytest.raises(ImageError) as err:
            read()
        assert err.value.type == "io_error"
        assert "AWS_ENDPOINT_URL" in err.value.message
    local = tmp_path / "f"
    local.write_bytes(b"x")
    for write in (lambda: store.put(url, b"x"), lambda: store.put_file(url, str(local))):
        with pytest.raises(OSError) as oserr:
            write()
        assert oserr.value.errno == errno.EIO


class _Panic(BaseException):
    """What pyo3 raises when the Rust code under obstore panics."""


def test_any_exception_from_the_store_client_is_an_image_failure(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    import obstore

    def panic(*args: object, **kwargs: object) -> None:
        raise _Panic("called `Result::unwrap()` on an `Err` value: InvalidPort")

    for name in ("get", "put", "head", "get_range", "list"):
        monkeypatch.setattr(obstore, name, panic)
    store = ObjectStore({**KEYS, "AWS_ENDPOINT_URL": "http://127.0.0.1:1"})
    url = S3Url("b", "k.jpg")
    for read in (
        lambda: store.get(url, 100),
        lambda: store.size(url),
        lambda: store.head_bytes(url, 10),
        lambda: list(store.list(S3Url("b", ""))),
    ):
        with pytest.raises(ImageError) as err:
            read()
        assert err.value.type == "io_error"
        assert "InvalidPort" in err.value.message
    local = tmp_path / "f"
    local.write_bytes(b"x")
    for write in (lambda: store.put(url, b"x"), lambda: store.put_file(url, str(local))):
        with pytest.raises(OSError) as oserr:
            write()
        assert oserr.value.errno == errno.EIO
    # an interrupt or an exit is not the store's failure: it goes on up
    for stop in (KeyboardInterrupt, SystemExit):

        def stopping(*args: object, stop: type[BaseException] = stop, **kw: object) -> None:
            raise stop()

        monkeypatch.setattr(obstore, "get", stopping)
        with pytest.raises(stop):
            store.get(url, 100)


@pytest.mark.parametrize("endpoint", [*PANICKING_ENDPOINTS, "http://h/a b", "http://h?x=1"])
def test_a_bad_endpoint_is_a_config_error_naming_the_setting(endpoint: str) -> None:
    for name in ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3"):
        with pytest.raises(ConfigError) as err:
            check_endpoint({name: endpoint})
        assert str(err.value).startswith(name + " "), str(err.value)


def test_an_endpoint_from_the_config_file_names_the_file(tmp_path: Path) -> None:
    config = tmp_path / "config"
    config.write_text("[profile minio]\nendpoint_url = http://[bad\n")
    env = {"AWS_CONFIG_FILE": str(config), "AWS_PROFILE": "minio"}
    with pytest.raises(ConfigError) as err:
        check_endpoint({**env, "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent"})
    assert "endpoint_url" in str(err.value) and str(config) in str(err.value)
    assert "minio" in str(err.value)


def test_good_endpoints_pass_and_secrets_in_them_are_not_shown() -> None:
    for endpoint in (
        "http://127.0.0.1:9000",
        "https://s3.eu-west-1.amazonaws.com",
        "http://[::1]:9000",
        "HTTPS://minio.internal/s3",
        "http://minio:9000/",
    ):
        check_endpoint({"AWS_ENDPOINT_URL": endpoint})
    check_endpoint(
        {"AWS_CONFIG_FILE": "/nonexistent", "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent"}
    )
    with pytest.raises(ConfigError) as err:
        check_endpoint({"AWS_ENDPOINT_URL": "http://user:hunter2@h:99999999"})
    assert "hunter2" not in str(err.value)


def test_s3_roots_and_outputs_check_the_endpoint_at_start_up(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL", "::::")
    for bad in ({"roots": ("s3://b/in",)}, {"roots": (str(tmp_path),), "out_dir": "s3://b/out"}):
        with pytest.raises(ConfigError) as err:
            WorkerConfig(**{"bootstrap": "x", "out_dir": "o", **bad}).validate()
        assert "AWS_ENDPOINT_URL" in str(err.value)
    # no s3:// anywhere: the endpoint is not used, so not checked
    WorkerConfig(bootstrap="x", out_dir="o", roots=(str(tmp_path),)).validate()
