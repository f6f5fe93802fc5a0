"""A stand-in for AWS IAM Identity Center (SSO) for tests: the OIDC service and the access portal.

moto has no IAM Identity Center API and no real one can run on a test machine, so this server plays
both services Identity Center exposes to a command-line client:

  sso-oidc (OIDC, https://oidc.REGION.amazonaws.com)   POST /client/register        RegisterClient
                                                        POST /device_authorization   StartDeviceAuthorization
                                                        POST /token                  CreateToken
                                                        GET  /authorize              the browser step of the
                                                                                     authorization-code flow
  sso (portal, https://portal.sso.REGION.amazonaws.com) GET  /federation/credentials GetRoleCredentials
                                                        GET  /assignment/accounts    ListAccounts
                                                        GET  /assignment/roles       ListAccountRoles
                                                        POST /logout                 Logout

Why it is honest (what makes a test against it mean something):

* Wire shapes come from botocore's service models (botocore/data/sso-oidc/2019-06-10/service-2.json
  and botocore/data/sso/2019-06-10/service-2.json in the test venv): paths, methods, JSON member
  names, the query string (`role_name`, `account_id`) and the `x-amz-sso_bearer_token` header, the
  HTTP status of each modeled error.
* Errors look the way AWS sends them. OIDC errors carry the OAuth code in the body and the modeled
  exception in `x-amzn-ErrorType`, e.g. HTTP 400,
  `x-amzn-ErrorType: AuthorizationPendingException:http://internal.amazon.com/coral/com.amazonaws.sso.oidc/`,
  `{"error":"authorization_pending","error_description":"Authorization is still pending"}` (as
  logged by botocore talking to the real service in aws/aws-cli#5878 and boto/boto3#3891). Portal
  errors are `{"message": ...}` with the exception name in `x-amzn-ErrorType`: 401
  UnauthorizedException "Session token not found or invalid" for a bad or expired access token,
  403 ForbiddenException "No access" for a role not assigned to the user (the message users see
  from the real portal, e.g. ministryofjustice/modernisation-platform#10161). The honesty test
  (tests/it/sso_standin.rs with sso_honesty.py) has botocore itself parse them into its modeled
  exceptions.
* The flows follow the AWS CLI v2 (aws/aws-cli v2 branch, awscli/botocore/utils.py
  SSOTokenFetcher / SSOTokenFetcherAuth): public clients; the device-code grant with
  authorization_pending / slow_down / expired_token / access_denied; the authorization-code grant
  with PKCE (S256 only; the verifier is checked against the challenge given at /authorize, the
  redirect URI must be one registered, a loopback URI matching whatever its port, RFC 8252 7.3, and
  the one given at /authorize); the refresh_token grant. Refresh tokens are issued only to
  registrations that asked for the `sso:account:access` scope, as the AWS CLI user guide states for
  `sso_registration_scopes`; a registration without scopes (the legacy, per-profile configuration)
  gets access tokens only. Codes, device codes and refresh tokens are single-use; a refresh
  returns a new refresh token and retires the old one (stricter than a client may need, so a client
  that keeps using the old one fails here rather than in production).
* The role credentials are real: GetRoleCredentials calls AssumeRole at moto (SigV4 authentication
  on, signed with moto's admin key) for the role ARN configured for the (account, role name) pair,
  so the credentials it serves work at moto and GetCallerIdentity names the assumed role.
  `expiration` is epoch milliseconds, as the model's ExpirationTimestampType says.

What it does not do: no sign-in page or user directory (a device code is approved by the test, or
automatically after a configurable number of `authorization_pending` polls; /authorize approves or
denies at once as configured); no regions (one instance answers for any); start URLs are recorded
but not checked; the portal's roles are plain IAM roles assumed with AssumeRole rather than the
SAML-federated AWSReservedSSO_* roles; tokens are opaque random strings.

The token cache of the AWS CLI v2 and botocore, which the Rust side reads and writes
(src/sso/cache.rs), checked against botocore in the venv (botocore/utils.py SSOTokenLoader,
botocore/tokens.py SSOTokenProvider and _sso_json_dumps): one JSON file per token in
~/.aws/sso/cache/, named by the lowercase hex SHA-1 of the sso-session name, or of the start URL for
a legacy profile without sso_session, plus ".json". Fields: startUrl, region, accessToken,
expiresAt, and for refreshable tokens clientId, clientSecret, registrationExpiresAt, refreshToken.
Timestamps are written as "%Y-%m-%dT%H:%M:%SZ" (UTC); botocore reads them with dateutil.

Control namespace (for tests only; never part of the real services):

  GET  /_standin/stats                    {"RegisterClient": n, "CreateToken": n, "CreateToken:refresh_token": n,
                                           "GetRoleCredentials": n, "AssumeRole": n, "error:InvalidGrantException": n, ...}
  GET  /_standin/settings                 the current settings
  POST /_standin/settings {..}            change settings (any subset), answers with all of them:
       auto_approve (true)                approve device codes without the test doing it
       pending_polls (1)                  ... after this many CreateToken polls answered authorization_pending
       slow_down_polls (0)                the next N device-code polls answer slow_down
       authorize ("approve")              what /authorize does: "approve" or "deny" (access_denied)
       access_token_ttl (3600)            seconds; 0 issues tokens that are already expired
       device_code_ttl (600)              seconds; 0 makes every poll answer expired_token
       registration_ttl (7776000)         seconds (90 days); 0 makes new registrations expire at once
       interval (1)                       the polling interval StartDeviceAuthorization announces
       role_session_seconds (3600)        DurationSeconds of the AssumeRole behind GetRoleCredentials
  POST /_standin/approve {"user_code"}    approve one device code (also: GET /device?user_code=..., the
                                          "browser" page a user would open); {"deny": true} denies it
  POST /_standin/revoke-refresh-tokens    every refresh token stops working (refresh -> invalid_grant)
  POST /_standin/expire-access-tokens     every access token issued so far expires now
  POST /_standin/reset                    forget clients, tokens and counters; settings back to defaults

Usage (the test venv's python; moto with auth on, as scripts/test starts it):

  sso_standin.py --moto URL [--moto-admin AKID:SECRET] --role ACCOUNT/ROLE_NAME=ROLE_ARN ... [--user NAME]

The admin key may come from the environment instead (MOTO_ADMIN="AKID:SECRET"), which keeps it out
of the process list. Prints "sso-standin ready http://127.0.0.1:PORT" once listening; exits when its
standard input reaches end of file (so it never outlives the test that started it; --keep-running
turns that off) or on SIGTERM.
No token or secret is ever printed or logged.
"""

import argparse
import base64
import hashlib
import json
import os
import secrets
import string
import sys
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlencode, urlsplit

import boto3
import botocore.config

OIDC_ERROR_NAMESPACE = ":http://internal.amazon.com/coral/com.amazonaws.sso.oidc/"

# Modeled OIDC exceptions: (HTTP status from the model, OAuth error code sent in the body).
OIDC_ERRORS = {
    "AuthorizationPendingException": (400, "authorization_pending"),
    "SlowDownException": (400, "slow_down"),
    "AccessDeniedException": (400, "access_denied"),
    "ExpiredTokenException": (400, "expired_token"),
    "InvalidGrantException": (400, "invalid_grant"),
    "InvalidClientException": (401, "invalid_client"),
    "InvalidRequestException": (400, "invalid_request"),
    "UnsupportedGrantTypeException": (400, "unsupported_grant_type"),
    "UnauthorizedClientException": (400, "unauthorized_client"),
    "InvalidScopeException": (400, "invalid_scope"),
    "InvalidClientMetadataException": (400, "invalid_client_metadata"),
    "InvalidRedirectUriException": (400, "invalid_redirect_uri"),
    "InternalServerException": (500, "server_error"),
}

# Modeled portal exceptions and their HTTP status; ForbiddenException is what the real portal sends
# for an unassigned role although the model does not list it.
PORTAL_ERRORS = {
    "InvalidRequestException": 400,
    "UnauthorizedException": 401,
    "ForbiddenException": 403,
    "ResourceNotFoundException": 404,
    "TooManyRequestsException": 429,
    "InternalServerException": 500,  # the stand-in's own failure (moto refused AssumeRole); not modeled
}

DEVICE_GRANT = "urn:ietf:params:oauth:grant-type:device_code"
GRANTS = {DEVICE_GRANT: "device_code", "authorization_code": "authorization_code", "refresh_token": "refresh_token"}
REFRESH_SCOPE = "sso:account:access"

DEFAULT_SETTINGS = {
    "auto_approve": True,
    "pending_polls": 1,
    "slow_down_polls": 0,
    "authorize": "approve",
    "access_token_ttl": 3600,
    "device_code_ttl": 600,
    "registration_ttl": 90 * 24 * 3600,
    "interval": 1,
    "role_session_seconds": 3600,
}


class OidcError(Exception):
    def __init__(self, shape, description):
        super().__init__(shape)
        self.shape = shape
        self.description = description


class PortalError(Exception):
    def __init__(self, shape, message):
        super().__init__(shape)
        self.shape = shape
        self.message = message


def token(prefix, nbytes=48):
    return prefix + base64.urlsafe_b64encode(secrets.token_bytes(nbytes)).decode().rstrip("=")


def user_code():
    letters = string.ascii_uppercase
    return "".join(secrets.choice(letters) for _ in range(4)) + "-" + "".join(secrets.choice(letters) for _ in range(4))


def s256(verifier):
    return base64.urlsafe_b64encode(hashlib.sha256(verifier.encode("ascii")).digest()).decode().rstrip("=")


def is_loopback_http(uri):
    parts = urlsplit(uri)
    return parts.scheme == "http" and parts.hostname in ("127.0.0.1", "localhost", "::1")


def redirect_matches(registered, given):
    """RFC 8252 7.3: a loopback redirect URI matches whatever its port; anything else exactly."""
    if registered == given:
        return True
    if is_loopback_http(registered) and is_loopback_http(given):
        r, g = urlsplit(registered), urlsplit(given)
        return (r.hostname, r.path, r.query) == (g.hostname, g.path, g.query)
    return False


class State:
    """Everything the two services remember, behind one lock."""

    def __init__(self, roles, moto_url, admin, user):
        self.lock = threading.Lock()
        self.roles = roles  # {(account_id, role_name): role_arn}
        self.user = user
        self.sts = boto3.client(
            "sts",
            endpoint_url=moto_url,
            region_name="us-east-1",
            aws_access_key_id=admin[0],
            aws_secret_access_key=admin[1],
            config=botocore.config.Config(retries={"max_attempts": 1}),
        )
        self.reset()

    def reset(self):
        with self.lock:
            self.settings = dict(DEFAULT_SETTINGS)
            self.clients = {}
            self.device_codes = {}
            self.auth_codes = {}
            self.access_tokens = {}
            self.refresh_tokens = {}
            self.stats = {}

    def count(self, key):
        with self.lock:
            self.stats[key] = self.stats.get(key, 0) + 1


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "sso-standin"
    sys_version = ""

    def log_message(self, format, *args):  # noqa: A002 - the base class's name
        pass  # request lines are not logged: nothing here may ever print a token

    @property
    def state(self):
        return self.server.state

    # ---- plumbing ----

    def _raw_body(self):
        length = int(self.headers.get("Content-Length") or 0)
        if length > 1024 * 1024:
            self.close_connection = True
            return None
        return self.rfile.read(length) if length else b""

    @staticmethod
    def _json(raw):
        if raw is None:
            raise OidcError("InvalidRequestException", "Request body too large")
        if not raw:
            return {}
        try:
            body = json.loads(raw)
        except ValueError:
            raise OidcError("InvalidRequestException", "Request body is not valid JSON")
        if not isinstance(body, dict):
            raise OidcError("InvalidRequestException", "Request body is not a JSON object")
        return body

    def _send(self, status, payload=None, headers=None, content_type="application/json"):
        data = b"" if payload is None else (payload if isinstance(payload, bytes) else json.dumps(payload).encode())
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.send_header("x-amzn-RequestId", str(uuid.uuid4()))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    def _oidc_error(self, e):
        status, code = OIDC_ERRORS[e.shape]
        self.state.count("error:" + e.shape)
        self._send(
            status,
            {"error": code, "error_description": e.description},
            {"x-amzn-ErrorType": e.shape + OIDC_ERROR_NAMESPACE},
        )

    def _portal_error(self, e):
        self.state.count("error:" + e.shape)
        self._send(PORTAL_ERRORS[e.shape], {"message": e.message}, {"x-amzn-ErrorType": e.shape})

    def do_POST(self):
        path = urlsplit(self.path).path
        raw = self._raw_body()  # always read, so a keep-alive connection stays in step
        routes = {
            "/client/register": self.register_client,
            "/device_authorization": self.start_device_authorization,
            "/token": self.create_token,
        }
        if path in routes:
            try:
                self._send(200, routes[path](self._json(raw)))
            except OidcError as e:
                self._oidc_error(e)
        elif path == "/logout":
            try:
                self.logout()
                self._send(200, b"")
            except PortalError as e:
                self._portal_error(e)
        elif path.startswith("/_standin/"):
            try:
                self.control(path, self._json(raw))
            except OidcError as e:
                self._send(400, {"message": e.description})
        else:
            self._send(404, {"message": f"No route for POST {path}"})

    def do_GET(self):
        parts = urlsplit(self.path)
        query = {k: v[0] for k, v in parse_qs(parts.query).items()}
        portal = {
            "/federation/credentials": self.get_role_credentials,
            "/assignment/accounts": self.list_accounts,
            "/assignment/roles": self.list_account_roles,
        }
        if parts.path in portal:
            try:
                self._send(200, portal[parts.path](query))
            except PortalError as e:
                self._portal_error(e)
        elif parts.path == "/authorize":
            self.authorize(query)
        elif parts.path == "/device":
            self.device_page(query)
        elif parts.path.startswith("/_standin/"):
            self.control(parts.path, {})
        else:
            self._send(404, {"message": f"No route for GET {parts.path}"})

    # ---- OIDC ----

    def _client(self, body, now):
        for member in ("clientId", "clientSecret"):
            if not body.get(member):
                raise OidcError("InvalidRequestException", f"Missing required parameter {member}")
        client = self.state.clients.get(body["clientId"])
        if client is None or not secrets.compare_digest(client["secret"], body["clientSecret"]):
            raise OidcError("InvalidClientException", "Invalid client credentials")
        if now >= client["expires_at"]:
            raise OidcError("InvalidClientException", "Client registration has expired")
        return client

    def register_client(self, body):
        self.state.count("RegisterClient")
        for member in ("clientName", "clientType"):
            if not body.get(member):
                raise OidcError("InvalidRequestException", f"Missing required parameter {member}")
        if body["clientType"] != "public":
            raise OidcError("InvalidClientMetadataException", "Only public clients are supported")
        scopes = body.get("scopes") or []
        grant_types = body.get("grantTypes")
        if grant_types is not None:
            for g in grant_types:
                if g not in GRANTS:
                    raise OidcError("UnsupportedGrantTypeException", f"Unsupported grant type {g}")
        redirect_uris = body.get("redirectUris") or []
        for uri in redirect_uris:
            if not (is_loopback_http(uri) or urlsplit(uri).scheme == "https"):
                raise OidcError("InvalidRedirectUriException", "Redirect URIs must be loopback http or https")
        if grant_types and "authorization_code" in grant_types:
            if not redirect_uris:
                raise OidcError("InvalidRequestException", "redirectUris is required for authorization_code")
            if not body.get("issuerUrl"):
                raise OidcError("InvalidRequestException", "issuerUrl is required for authorization_code")
        now = time.time()
        with self.state.lock:
            issued = int(now)
            expires = issued + int(self.state.settings["registration_ttl"])
            client_id = token("", 16)
            client = {
                "secret": token("", 96),
                "name": body["clientName"],
                "scopes": list(scopes),
                "grant_types": list(grant_types) if grant_types is not None else [DEVICE_GRANT, "refresh_token"],
                "redirect_uris": list(redirect_uris),
                "issuer_url": body.get("issuerUrl"),
                "expires_at": expires,
            }
            self.state.clients[client_id] = client
        return {
            "clientId": client_id,
            "clientSecret": client["secret"],
            "clientIdIssuedAt": issued,
            "clientSecretExpiresAt": expires,
        }

    def start_device_authorization(self, body):
        self.state.count("StartDeviceAuthorization")
        now = time.time()
        with self.state.lock:
            client = self._client(body, now)
            if not body.get("startUrl"):
                raise OidcError("InvalidRequestException", "Missing required parameter startUrl")
            if DEVICE_GRANT not in client["grant_types"]:
                raise OidcError("UnauthorizedClientException", "Client is not registered for the device code grant")
            s = self.state.settings
            code = token("", 64)
            uc = user_code()
            self.state.device_codes[code] = {
                "client_id": body["clientId"],
                "user_code": uc,
                "start_url": body["startUrl"],
                "expires_at": now + int(s["device_code_ttl"]),
                "approved": False,
                "denied": False,
                "used": False,
                "polls": 0,
            }
            base = self.server.url
            return {
                "deviceCode": code,
                "userCode": uc,
                "verificationUri": f"{base}/device",
                "verificationUriComplete": f"{base}/device?{urlencode({'user_code': uc})}",
                "expiresIn": int(s["device_code_ttl"]),
                "interval": int(s["interval"]),
            }

    def create_token(self, body):
        self.state.count("CreateToken")
        now = time.time()
        with self.state.lock:
            client = self._client(body, now)
            grant = body.get("grantType")
            if not grant:
                raise OidcError("InvalidRequestException", "Missing required parameter grantType")
            if grant not in GRANTS:
                raise OidcError("UnsupportedGrantTypeException", f"Unsupported grant type {grant}")
            self.state.stats["CreateToken:" + GRANTS[grant]] = self.state.stats.get("CreateToken:" + GRANTS[grant], 0) + 1
            if grant not in client["grant_types"]:
                raise OidcError("UnauthorizedClientException", f"Client is not registered for {grant}")
            if grant == DEVICE_GRANT:
                start_url = self._device_grant(body, now)
            elif grant == "authorization_code":
                start_url = self._code_grant(body, client, now)
            else:
                start_url = self._refresh_grant(body, now)
            return self._issue(body["clientId"], client, start_url, now)

    def _device_grant(self, body, now):
        code = body.get("deviceCode")
        if not code:
            raise OidcError("InvalidRequestException", "Missing required parameter deviceCode")
        auth = self.state.device_codes.get(code)
        if auth is None or auth["client_id"] != body["clientId"] or auth["used"]:
            raise OidcError("InvalidGrantException", "Invalid device code provided")
        if now >= auth["expires_at"]:
            raise OidcError("ExpiredTokenException", "Device code has expired")
        if auth["denied"]:
            raise OidcError("AccessDeniedException", "Authorization was denied by the user")
        s = self.state.settings
        if s["slow_down_polls"] > 0:
            s["slow_down_polls"] -= 1
            raise OidcError("SlowDownException", "Client is polling too quickly")
        auth["polls"] += 1
        if not auth["approved"] and s["auto_approve"] and auth["polls"] > s["pending_polls"]:
            auth["approved"] = True
        if not auth["approved"]:
            raise OidcError("AuthorizationPendingException", "Authorization is still pending")
        auth["used"] = True
        return auth["start_url"]

    def _code_grant(self, body, client, now):
        for member in ("code", "redirectUri", "codeVerifier"):
            if not body.get(member):
                raise OidcError("InvalidRequestException", f"Missing required parameter {member}")
        grant = self.state.auth_codes.get(body["code"])
        if grant is None or grant["client_id"] != body["clientId"] or grant["used"]:
            raise OidcError("InvalidGrantException", "Invalid authorization code provided")
        grant["verifier"] = body["codeVerifier"]
        grant["used"] = True
        if now >= grant["expires_at"]:
            raise OidcError("InvalidGrantException", "Authorization code has expired")
        if body["redirectUri"] != grant["redirect_uri"]:
            raise OidcError("InvalidGrantException", "Redirect URI does not match the authorization request")
        if not secrets.compare_digest(s256(body["codeVerifier"]), grant["challenge"]):
            raise OidcError("InvalidGrantException", "Code verifier does not match the code challenge")
        return client["issuer_url"]

    def _refresh_grant(self, body, now):
        rt = body.get("refreshToken")
        if not rt:
            raise OidcError("InvalidRequestException", "Missing required parameter refreshToken")
        entry = self.state.refresh_tokens.get(rt)
        if entry is None or entry["client_id"] != body["clientId"] or entry["revoked"]:
            raise OidcError("InvalidGrantException", "Invalid refresh token provided")
        entry["revoked"] = True  # rotated: the new one replaces it
        return entry["start_url"]

    def _issue(self, client_id, client, start_url, now):
        ttl = int(self.state.settings["access_token_ttl"])
        at = token("aoa")
        self.state.access_tokens[at] = {"client_id": client_id, "expires_at": now + ttl, "revoked": False}
        out = {"accessToken": at, "tokenType": "Bearer", "expiresIn": ttl}
        if REFRESH_SCOPE in client["scopes"]:
            rt = token("aor")
            self.state.refresh_tokens[rt] = {"client_id": client_id, "start_url": start_url, "revoked": False}
            out["refreshToken"] = rt
        return out

    def authorize(self, q):
        """The browser step: checks the request, then redirects to redirect_uri with code and state
        (or error=access_denied). Unknown clients and unregistered redirect URIs get a 400 page and no
        redirect (RFC 6749 4.1.2.1)."""
        self.state.count("Authorize")
        now = time.time()
        with self.state.lock:
            client = self.state.clients.get(q.get("client_id", ""))
            redirect_uri = q.get("redirect_uri", "")
            if (
                client is None
                or now >= client["expires_at"]
                or not any(redirect_matches(r, redirect_uri) for r in client["redirect_uris"])
            ):
                self._send(400, b"invalid client_id or redirect_uri", content_type="text/plain")
                return
            params = {"state": q["state"]} if "state" in q else {}
            error = None
            if q.get("response_type") != "code":
                error = ("unsupported_response_type", "response_type must be code")
            elif "authorization_code" not in client["grant_types"]:
                error = ("unauthorized_client", "client is not registered for authorization_code")
            elif q.get("code_challenge_method") != "S256" or not q.get("code_challenge"):
                error = ("invalid_request", "an S256 code_challenge is required")
            elif self.state.settings["authorize"] != "approve":
                error = ("access_denied", "the user denied the request")
            if error:
                params.update({"error": error[0], "error_description": error[1]})
            else:
                code = token("", 32)
                self.state.auth_codes[code] = {
                    "client_id": q["client_id"],
                    "redirect_uri": redirect_uri,
                    "challenge": q["code_challenge"],
                    "expires_at": now + 300,
                    "used": False,
                }
                params = {"code": code, **params}
        sep = "&" if urlsplit(redirect_uri).query else "?"
        self._send(302, b"", {"Location": redirect_uri + sep + urlencode(params)}, content_type="text/plain")

    def device_page(self, q):
        """The verification page a user opens: visiting it with user_code approves that device code."""
        uc = q.get("user_code")
        ok = uc is not None and self._set_device(uc, approve=True)
        self._send(200 if ok else 404, b"approved" if ok else b"unknown user code", content_type="text/plain")

    def _set_device(self, uc, approve):
        with self.state.lock:
            for auth in self.state.device_codes.values():
                if auth["user_code"] == uc:
                    auth["approved"], auth["denied"] = approve, not approve
                    return True
        return False

    # ---- portal ----

    def _bearer(self):
        at = self.headers.get("x-amz-sso_bearer_token")
        with self.state.lock:
            entry = self.state.access_tokens.get(at or "")
            if entry is None or entry["revoked"] or time.time() >= entry["expires_at"]:
                raise PortalError("UnauthorizedException", "Session token not found or invalid")
        return at

    def get_role_credentials(self, q):
        self.state.count("GetRoleCredentials")
        self._bearer()
        for member in ("role_name", "account_id"):
            if not q.get(member):
                raise PortalError("InvalidRequestException", f"Missing required parameter {member}")
        arn = self.state.roles.get((q["account_id"], q["role_name"]))
        if arn is None:
            raise PortalError("ForbiddenException", "No access")
        self.state.count("AssumeRole")
        with self.state.lock:
            duration = int(self.state.settings["role_session_seconds"])
        try:
            creds = self.state.sts.assume_role(
                RoleArn=arn, RoleSessionName=self.state.user, DurationSeconds=duration
            )["Credentials"]
        except Exception as e:  # moto refused (a test set-up mistake): name the call, never a credential
            raise PortalError("InternalServerException", f"AssumeRole at moto failed: {type(e).__name__}")
        return {
            "roleCredentials": {
                "accessKeyId": creds["AccessKeyId"],
                "secretAccessKey": creds["SecretAccessKey"],
                "sessionToken": creds["SessionToken"],
                "expiration": int(creds["Expiration"].timestamp() * 1000),
            }
        }

    def list_accounts(self, q):
        self.state.count("ListAccounts")
        self._bearer()
        accounts = sorted({a for a, _ in self.state.roles})
        return {
            "accountList": [
                {"accountId": a, "accountName": f"account-{a}", "emailAddress": f"aws-{a}@example.com"}
                for a in accounts
            ]
        }

    def list_account_roles(self, q):
        self.state.count("ListAccountRoles")
        self._bearer()
        if not q.get("account_id"):
            raise PortalError("InvalidRequestException", "Missing required parameter account_id")
        roles = sorted(r for a, r in self.state.roles if a == q["account_id"])
        return {"roleList": [{"roleName": r, "accountId": q["account_id"]} for r in roles]}

    def logout(self):
        self.state.count("Logout")
        at = self._bearer()
        with self.state.lock:
            self.state.access_tokens[at]["revoked"] = True

    # ---- control ----

    def control(self, path, body):
        st = self.state
        if path == "/_standin/stats":
            with st.lock:
                self._send(200, dict(st.stats))
        elif path == "/_standin/settings":
            with st.lock:
                unknown = [k for k in body if k not in DEFAULT_SETTINGS]
                if unknown:
                    self._send(400, {"message": f"unknown settings {unknown}"})
                    return
                st.settings.update(body)
                self._send(200, dict(st.settings))
        elif path == "/_standin/approve":
            ok = self._set_device(body.get("user_code", ""), approve=not body.get("deny", False))
            self._send(200 if ok else 404, {"found": ok})
        elif path == "/_standin/revoke-refresh-tokens":
            with st.lock:
                n = sum(1 for e in st.refresh_tokens.values() if not e["revoked"])
                for e in st.refresh_tokens.values():
                    e["revoked"] = True
            self._send(200, {"revoked": n})
        elif path == "/_standin/expire-access-tokens":
            now = time.time()
            with st.lock:
                n = 0
                for e in st.access_tokens.values():
                    if e["expires_at"] > now:
                        e["expires_at"] = now
                        n += 1
            self._send(200, {"expired": n})
        elif path == "/_standin/issued":
            # The one-time secrets of the sign-ins so far, for tests that look for leaks.
            with st.lock:
                self._send(200, {
                    "device_codes": list(st.device_codes),
                    "auth_codes": list(st.auth_codes),
                    "code_verifiers": [g["verifier"] for g in st.auth_codes.values() if "verifier" in g],
                })
        elif path == "/_standin/reset":
            st.reset()
            self._send(200, {"reset": True})
        else:
            self._send(404, {"message": f"no control {path}"})


def parse_role(spec):
    try:
        key, arn = spec.split("=", 1)
        account, name = key.split("/", 1)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--role wants ACCOUNT/ROLE_NAME=ROLE_ARN, got {spec!r}")
    return (account, name), arn


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--moto", required=True, help="moto's URL (SigV4 authentication on)")
    ap.add_argument("--moto-admin", default=os.environ.get("MOTO_ADMIN"), help="AKID:SECRET (default: $MOTO_ADMIN)")
    ap.add_argument("--role", action="append", type=parse_role, default=[], help="ACCOUNT/ROLE_NAME=ROLE_ARN")
    ap.add_argument("--user", default="standin-user", help="the signed-in user (the AssumeRole session name)")
    ap.add_argument("--keep-running", action="store_true",
                    help="do not exit at the end of standard input (for running it by hand)")
    args = ap.parse_args()
    if not args.moto_admin or ":" not in args.moto_admin:
        ap.error("the moto admin key is needed: --moto-admin AKID:SECRET or MOTO_ADMIN")
    admin = tuple(args.moto_admin.split(":", 1))

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    server.url = f"http://127.0.0.1:{server.server_address[1]}"
    server.state = State(dict(args.role), args.moto, admin, args.user)

    def stdin_watch():
        while sys.stdin.buffer.read(4096):
            pass
        os._exit(0)

    if not args.keep_running:
        threading.Thread(target=stdin_watch, daemon=True).start()
    print(f"sso-standin ready {server.url}", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
