"""The registry as one S3 object, replaced with conditional PUTs.

The object's ETag is the version. A create sends ``If-None-Match: *`` and an update
``If-Match: <etag read>``, so S3 itself refuses a write that would overwrite someone
else's commit (412 PreconditionFailed, or 409 ConditionalRequestConflict while another
conditional write to the key is in flight): no lock service, and concurrent ``apply``s
lose nothing. S3 has honoured both headers since late 2024; S3-compatible servers that
ignore them (check yours) would silently fall back to last-writer-wins.

Endpoint, first found: ``registry.s3_endpoint_url``, ``AWS_ENDPOINT_URL_S3``,
``AWS_ENDPOINT_URL``, ``FEAST_S3_ENDPOINT_URL`` (what Feast reads), else AWS itself.
Credentials and region come from boto3's usual chain (environment, profile, instance role).
"""

from __future__ import annotations

import os
import re
import threading
from functools import cache
from typing import Any

from tiffin.config import redact_url
from tiffin.errors import (
    ConfigError,
    MissingDependencyError,
    RegistryConflictError,
    RegistryError,
    RegistryUnavailableError,
)
from tiffin.registry.base import RegistryStore

_URL = re.compile(r"s3://([^/]+)/(.+)")
ENDPOINT_VARIABLES = ("AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL", "FEAST_S3_ENDPOINT_URL")
# What S3 answers when a conditional write loses: the caller re-reads and retries.
CONFLICT_CODES = {"PreconditionFailed", "412", "ConditionalRequestConflict", "409"}
MISSING_CODES = {"NoSuchKey", "404", "NotFound"}
NOT_MODIFIED_CODES = {"304", "NotModified"}
UNAVAILABLE_CODES = {"SlowDown", "ServiceUnavailable", "InternalError", "RequestTimeout", "503",
                     "500"}
CREDENTIAL_CODES = {"InvalidAccessKeyId", "SignatureDoesNotMatch", "ExpiredToken",
                    "InvalidToken", "AccessDenied", "403"}


def parse_s3_url(url: str) -> tuple[str, str]:
    """``s3://bucket/key`` -> (bucket, key)."""
    m = _URL.fullmatch(url)
    if not m:
        raise ConfigError(f"registry path {url!r} is not s3://bucket/key",
                          hint="e.g. s3://my-bucket/feast/registry.json")
    return m.group(1), m.group(2)


class S3RegistryStore(RegistryStore):
    """``registry: s3://bucket/key`` (``pip install 'tiffin[s3]'``)."""

    def __init__(self, url: str, endpoint_url: str | None = None,
                 put_args: dict[str, Any] | None = None):
        self.bucket, self.key = parse_s3_url(url)
        self.endpoint_url = endpoint_url or next(
            (os.environ[v] for v in ENDPOINT_VARIABLES if os.environ.get(v)), None)
        self.put_args = dict(put_args or {})
        self._client: Any = None
        self._client_lock = threading.Lock()
        self._last: tuple[str, bytes] | None = None  # (ETag, body) of the last read

    def describe(self) -> str:
        where = f"s3://{self.bucket}/{self.key}"
        return f"{where} at {redact_url(self.endpoint_url)}" if self.endpoint_url else where

    def _s3(self) -> Any:
        with self._client_lock:
            if self._client is None:
                try:
                    import boto3
                    import botocore.session
                    from botocore.config import Config
                except ImportError:
                    raise MissingDependencyError("boto3", "s3") from None
                config = Config(connect_timeout=5, read_timeout=30,
                                retries={"mode": "standard", "max_attempts": 3})
                # A session of its own (boto3's default one is not safe to share between
                # threads), reusing the parsed service models, which are slow to load.
                core = botocore.session.Session()
                core.register_component("data_loader", _shared_loader())
                try:
                    self._client = boto3.session.Session(botocore_session=core).client(
                        "s3", endpoint_url=self.endpoint_url, config=config)
                except ValueError as e:  # botocore: "Invalid endpoint: ..."
                    raise ConfigError(f"registry {self.describe()}: {e}",
                                      hint="s3_endpoint_url / AWS_ENDPOINT_URL must be a URL "
                                           "like http://127.0.0.1:9000") from None
            return self._client

    def read(self) -> tuple[bytes | None, str | None]:
        from botocore.exceptions import BotoCoreError, ClientError
        # A serving process re-reads the registry every few seconds: ask for the body
        # only if it changed since the last read (If-None-Match; 304 otherwise).
        last = self._last
        condition = {"IfNoneMatch": last[0]} if last is not None else {}
        try:
            response = self._s3().get_object(Bucket=self.bucket, Key=self.key, **condition)
            raw, etag = response["Body"].read(), response["ETag"]
            self._last = (etag, raw)
            return raw, etag
        except ClientError as e:
            if last is not None and _code(e) in NOT_MODIFIED_CODES:
                return last[1], last[0]
            if _code(e) in MISSING_CODES:
                self._last = None
                return None, None
            raise self._error(e, "read") from None
        except BotoCoreError as e:
            raise self._error(e, "read") from None

    def write(self, data: bytes, expected_version: str | None) -> str:
        from botocore.exceptions import BotoCoreError, ClientError
        condition = {"IfNoneMatch": "*"} if expected_version is None else \
            {"IfMatch": expected_version}
        try:
            response = self._s3().put_object(Bucket=self.bucket, Key=self.key, Body=data,
                                             ContentType="application/json",
                                             **self.put_args, **condition)
        except ClientError as e:
            # If-Match on a key deleted meanwhile answers NoSuchKey: also someone else's change.
            if _code(e) in CONFLICT_CODES or (expected_version and _code(e) in MISSING_CODES):
                raise RegistryConflictError(f"registry {self.describe()} changed while "
                                            "applying",
                                            hint="retry; tiffin retries this on its own"
                                            ) from None
            raise self._error(e, "write") from None
        except BotoCoreError as e:
            raise self._error(e, "write") from None
        return response["ETag"]

    def delete(self) -> None:
        from botocore.exceptions import BotoCoreError, ClientError
        try:
            self._s3().delete_object(Bucket=self.bucket, Key=self.key)
        except ClientError as e:
            if _code(e) not in MISSING_CODES:
                raise self._error(e, "delete") from None
        except BotoCoreError as e:
            raise self._error(e, "delete") from None

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None

    def _error(self, e: Exception, action: str) -> RegistryError:
        """A boto error as one line with a hint; never the raw traceback."""
        from botocore.exceptions import ClientError, NoCredentialsError, PartialCredentialsError
        where = self.describe()
        if isinstance(e, (NoCredentialsError, PartialCredentialsError)):
            return RegistryError(f"cannot {action} registry {where}: no AWS credentials",
                                 hint="set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or "
                                      "AWS_PROFILE")
        if not isinstance(e, ClientError):  # connection refused, timeouts, DNS
            return RegistryUnavailableError(
                f"cannot reach registry {where}: {e}",
                hint="check that the endpoint is up; it comes from s3_endpoint_url in "
                     "feature_store.yaml or AWS_ENDPOINT_URL")
        code = _code(e)
        detail = e.response.get("Error", {}).get("Message") or code
        if code == "NoSuchBucket":
            return RegistryError(f"cannot {action} registry {where}: bucket {self.bucket!r} "
                                 "does not exist",
                                 hint=f"create it (aws s3 mb s3://{self.bucket}) or fix "
                                      "registry.path")
        if code in CREDENTIAL_CODES:
            return RegistryError(f"cannot {action} registry {where}: {code}: {detail}",
                                 hint="check the AWS credentials and that they may read and "
                                      "write this key")
        if code in UNAVAILABLE_CODES:
            return RegistryUnavailableError(f"cannot {action} registry {where}: {code}: "
                                            f"{detail}", hint="retry later")
        return RegistryError(f"cannot {action} registry {where}: {code}: {detail}")


@cache
def _shared_loader() -> Any:
    from botocore.loaders import create_loader
    return create_loader()


def _code(e: Any) -> str:
    return str(e.response.get("Error", {}).get("Code", ""))
