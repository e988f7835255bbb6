"""AWS settings the standard way, and the check of an S3 endpoint URL.

Credentials, region and endpoint come as the AWS SDKs find them
(:func:`aws_settings`): the environment (``AWS_ACCESS_KEY_ID``, ...,
``AWS_ENDPOINT_URL_S3``, ``AWS_ENDPOINT_URL``), then the shared credentials
and config files of ``AWS_PROFILE``. An endpoint that is not an
``http(s)://host[:port][/path]`` URL is refused before any request
(:func:`check_endpoint`, naming the setting it came from): object_store
panics on some of them. Pure of any S3 client: :mod:`imgstream.io.objstore` uses it.
"""

from __future__ import annotations

import configparser
import contextlib
import os
import re
from collections.abc import Mapping
from urllib.parse import urlsplit

from imgstream.errors import ConfigError

#: Attempts of one request unless AWS_MAX_ATTEMPTS says otherwise (the AWS SDKs' default).
DEFAULT_ATTEMPTS = 3


def _profile(parser: configparser.ConfigParser, name: str, config_file: bool) -> dict[str, str]:
    section = name if not config_file or name == "default" else f"profile {name}"
    if parser.has_section(section):
        return dict(parser.items(section))
    return {}


def _read_ini(path: str) -> configparser.ConfigParser:
    parser = configparser.ConfigParser(interpolation=None)
    # an unreadable file is as good as none: obstore then tries its own sources
    with contextlib.suppress(configparser.Error, UnicodeDecodeError):
        parser.read(path, encoding="utf-8")
    return parser


def aws_settings(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """The S3 settings the AWS SDKs would use: environment, then the shared files.

    Keys: ``access_key_id``, ``secret_access_key``, ``session_token``,
    ``region``, ``endpoint`` (only those found).
    """
    return resolve(os.environ if environ is None else environ)[0]


def resolve(env: Mapping[str, str]) -> tuple[dict[str, str], str]:
    """:func:`aws_settings` from ``env``, and the name of the setting the endpoint came from."""
    home = os.path.expanduser("~")
    profile = env.get("AWS_PROFILE") or env.get("AWS_DEFAULT_PROFILE") or "default"
    creds_path = env.get("AWS_SHARED_CREDENTIALS_FILE") or os.path.join(home, ".aws", "credentials")
    config_path = env.get("AWS_CONFIG_FILE") or os.path.join(home, ".aws", "config")
    in_config = _profile(_read_ini(config_path), profile, config_file=True)
    in_creds = _profile(_read_ini(creds_path), profile, config_file=False)
    files: dict[str, str] = {**in_config, **in_creds}
    out: dict[str, str] = {}
    if env.get("AWS_ACCESS_KEY_ID") and env.get("AWS_SECRET_ACCESS_KEY"):
        out["access_key_id"] = env["AWS_ACCESS_KEY_ID"]
        out["secret_access_key"] = env["AWS_SECRET_ACCESS_KEY"]
        if env.get("AWS_SESSION_TOKEN"):
            out["session_token"] = env["AWS_SESSION_TOKEN"]
    elif files.get("aws_access_key_id") and files.get("aws_secret_access_key"):
        out["access_key_id"] = files["aws_access_key_id"]
        out["secret_access_key"] = files["aws_secret_access_key"]
        if files.get("aws_session_token"):
            out["session_token"] = files["aws_session_token"]
    region = env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION") or files.get("region")
    if region:
        out["region"] = region
    from_file = "credentials" if in_creds.get("endpoint_url") else "config"
    sources = [
        ("AWS_ENDPOINT_URL_S3", env.get("AWS_ENDPOINT_URL_S3")),
        ("AWS_ENDPOINT_URL", env.get("AWS_ENDPOINT_URL")),
        (
            f"endpoint_url of profile {profile!r} in "
            f"{creds_path if from_file == 'credentials' else config_path}",
            files.get("endpoint_url"),
        ),
        ("AWS_ENDPOINT", env.get("AWS_ENDPOINT")),
    ]
    source, endpoint = next(((name, v) for name, v in sources if v), ("", None))
    if endpoint:
        out["endpoint"] = endpoint
    return out, source


#: What an endpoint URL may hold (RFC 3986): no spaces, controls or non-ASCII.
_URL_CHARS = re.compile(r"[A-Za-z0-9\-._~:/?#\[\]@!$&'()*+,;=%]*")
#: A host name (or IPv4 address) as a URL writes it; IPv6 literals are checked by urlsplit.
_HOST = re.compile(r"[A-Za-z0-9\-._~!$&'()*+,;=%]+")


def endpoint_problem(endpoint: str) -> str | None:
    """Why ``endpoint`` cannot be an S3 endpoint URL (None when it can).

    object_store panics inside a request on URLs the ``http`` crate cannot
    parse (``::::``, ``http://[bad``, a port over 65535, ``file:///x``, a
    space), so they are refused before the client is made.
    """
    if not _URL_CHARS.fullmatch(endpoint):
        return "it holds a space, a control or a non-ASCII character"
    try:
        parts = urlsplit(endpoint)
    except ValueError as exc:
        return f"it is not a URL ({exc})"
    if parts.scheme.lower() not in ("http", "https"):
        return "it must start with http:// or https://"
    if "?" in endpoint or "#" in endpoint:
        return "it must not have a query or a fragment"
    host = parts.netloc.rpartition("@")[2]
    if not parts.hostname:
        return "it has no host"
    if not host.startswith("[") and not _HOST.fullmatch(parts.hostname):
        return "its host is not a host name or an IP address"
    try:
        port = parts.port
    except ValueError:
        port = 0
    if port == 0:
        return "its port must be a number from 1 to 65535"
    return None


def _shown(endpoint: str) -> str:
    """The endpoint as an error message may show it: a password in it masked."""
    return re.sub(r"//[^/@]*@", "//***@", endpoint)


def check_endpoint(environ: Mapping[str, str] | None = None) -> None:
    """ConfigError, naming the setting it came from, unless the S3 endpoint is usable.

    Called at start-up by the commands that use ``s3://`` (no endpoint at all
    is fine: AWS's regional one).
    """
    settings, source = resolve(os.environ if environ is None else environ)
    problem = endpoint_error(settings, source)
    if problem is not None:
        raise ConfigError(problem)


def endpoint_error(settings: Mapping[str, str], source: str) -> str | None:
    """The message of an unusable endpoint in ``settings`` (from ``source``), else None."""
    endpoint = settings.get("endpoint")
    problem = endpoint_problem(endpoint) if endpoint else None
    if problem is None:
        return None
    return f"{source} {_shown(str(endpoint))!r} is not an S3 endpoint URL: {problem}"


def attempts(env: Mapping[str, str]) -> int:
    """Attempts of one request: ``AWS_MAX_ATTEMPTS``, else :data:`DEFAULT_ATTEMPTS`."""
    try:
        return max(1, int(env.get("AWS_MAX_ATTEMPTS", DEFAULT_ATTEMPTS)))
    except ValueError:
        return DEFAULT_ATTEMPTS
