"""The honesty proof of the IAM Identity Center stand-in (sso_standin.py): AWS's own Python SDK,
pointed at it, must work against it exactly as against the real services.

  sso_honesty.py wire     STANDIN_URL MOTO_URL ACCOUNT ROLE_NAME ROLE_ARN
      boto3's sso-oidc client: RegisterClient -> StartDeviceAuthorization -> CreateToken polling
      through authorization_pending (and slow_down, expired_token, access_denied, invalid_grant,
      invalid_client parsed into botocore's modeled exceptions) -> tokens; the refresh_token grant;
      the authorization-code grant with PKCE after a real redirect from /authorize to a local
      listener; boto3's sso client: GetRoleCredentials (and UnauthorizedException for a bad token,
      ForbiddenException for an unassigned role), ListAccounts, ListAccountRoles, Logout; the role
      credentials calling sts get-caller-identity at moto. Leaves a refreshable sign-in (an
      expired access token with its refresh token) in $HOME/.aws/sso/cache for `provider`.

  sso_honesty.py provider STANDIN_URL MOTO_URL ACCOUNT ROLE_NAME ROLE_ARN START_URL [SESSION_NAME]
      botocore's own credential chain for an SSO profile, with the stand-in as both endpoints
      (AWS_ENDPOINT_URL_SSO_OIDC, AWS_ENDPOINT_URL_SSO): with SESSION_NAME, an [sso-session]
      profile whose token SSOTokenProvider (botocore.tokens) loads from the cache file named
      sha1(SESSION_NAME) and refreshes through the stand-in when it is within 15 minutes of expiry,
      rewriting that file; without it, a legacy profile whose token SSOTokenLoader reads from the
      file named sha1(START_URL). SSOProvider (botocore.credentials) then calls GetRoleCredentials,
      and the credentials call sts get-caller-identity at moto.

ROLE_NAME is the portal's name of the role (sso_role_name), ROLE_ARN the IAM role the stand-in
assumes for it: get-caller-identity must name that role.

$HOME must be a private scratch directory (botocore computes ~/.aws/sso/cache at import time, so it
is set by the caller). Prints one JSON object of results; fails with a traceback otherwise. Never
prints a token.
"""
import datetime
import hashlib
import http.server
import json
import os
import sys
import threading
import urllib.parse
import urllib.request

HOME = os.environ["HOME"]
CACHE_DIR = os.path.join(HOME, ".aws", "sso", "cache")

import boto3  # noqa: E402  (after HOME is known)
import botocore.credentials  # noqa: E402
import botocore.exceptions  # noqa: E402
import botocore.session  # noqa: E402
import botocore.utils  # noqa: E402
import botocore.tokens  # noqa: E402
from botocore import UNSIGNED  # noqa: E402
from botocore.config import Config  # noqa: E402


def control(standin, path, body=None):
    data = json.dumps(body if body is not None else {}).encode()
    req = urllib.request.Request(standin + "/_standin/" + path, data=data, method="POST",
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req) as resp:
        return json.load(resp)


def stats(standin):
    with urllib.request.urlopen(standin + "/_standin/stats") as resp:
        return json.load(resp)


def expect(exc_type, fn, **kwargs):
    try:
        fn(**kwargs)
    except exc_type as e:
        return e
    raise AssertionError(f"{fn.__name__} did not raise {exc_type.__name__}")


def caller_arn(moto, creds):
    sts = boto3.client(
        "sts", endpoint_url=moto, region_name="us-east-1",
        aws_access_key_id=creds["accessKeyId"], aws_secret_access_key=creds["secretAccessKey"],
        aws_session_token=creds["sessionToken"],
    )
    return sts.get_caller_identity()["Arn"]


def assumed_role_prefix(role_arn):
    """arn:aws:iam::ACCOUNT:role/NAME -> arn:aws:sts::ACCOUNT:assumed-role/NAME/"""
    account, name = role_arn.split(":")[4], role_arn.rsplit("/", 1)[1]
    return f"arn:aws:sts::{account}:assumed-role/{name}/"


def wire(standin, moto, account, role, role_arn):
    cfg = Config(signature_version=UNSIGNED, region_name="us-east-1", retries={"max_attempts": 1})
    oidc = boto3.client("sso-oidc", endpoint_url=standin, config=cfg)
    sso = boto3.client("sso", endpoint_url=standin, config=cfg)
    ex = oidc.exceptions
    start_url = "https://d-0000000000.awsapps.com/start"
    out = {}

    # Device flow as the AWS CLI v2 runs it (SSOTokenFetcher).
    reg = oidc.register_client(clientName="botocore-client-honesty", clientType="public",
                               scopes=["sso:account:access"])
    assert isinstance(reg["clientSecretExpiresAt"], int) and reg["clientSecretExpiresAt"] > 0
    creds = {"clientId": reg["clientId"], "clientSecret": reg["clientSecret"]}
    control(standin, "settings", {"slow_down_polls": 1, "pending_polls": 1})
    dev = oidc.start_device_authorization(startUrl=start_url, **creds)
    assert dev["interval"] >= 1 and dev["expiresIn"] > 0 and "-" in dev["userCode"]
    assert dev["verificationUriComplete"].startswith(dev["verificationUri"])
    poll = dict(grantType="urn:ietf:params:oauth:grant-type:device_code", deviceCode=dev["deviceCode"], **creds)
    e = expect(ex.SlowDownException, oidc.create_token, **poll)
    assert e.response["Error"]["Code"] == "SlowDownException", e.response
    e = expect(ex.AuthorizationPendingException, oidc.create_token, **poll)
    assert e.response["ResponseMetadata"]["HTTPStatusCode"] == 400
    assert e.response["error"] == "authorization_pending", e.response  # the modeled member
    tok = oidc.create_token(**poll)
    assert tok["tokenType"] == "Bearer" and tok["expiresIn"] > 0
    assert tok["accessToken"] and tok["refreshToken"]
    expect(ex.InvalidGrantException, oidc.create_token, **poll)  # a device code is single-use
    bad = dict(poll, clientSecret="wrong")
    e = expect(ex.InvalidClientException, oidc.create_token, **bad)
    assert e.response["ResponseMetadata"]["HTTPStatusCode"] == 401
    out["device_flow"] = "ok"

    # Explicit approval through the verification page, as a user in a browser.
    control(standin, "settings", {"auto_approve": False})
    dev2 = oidc.start_device_authorization(startUrl=start_url, **creds)
    poll2 = dict(poll, deviceCode=dev2["deviceCode"])
    expect(ex.AuthorizationPendingException, oidc.create_token, **poll2)
    expect(ex.AuthorizationPendingException, oidc.create_token, **poll2)
    with urllib.request.urlopen(dev2["verificationUriComplete"]) as resp:
        assert resp.status == 200
    assert oidc.create_token(**poll2)["accessToken"]
    # Denied, then expired.
    dev3 = oidc.start_device_authorization(startUrl=start_url, **creds)
    control(standin, "approve", {"user_code": dev3["userCode"], "deny": True})
    expect(ex.AccessDeniedException, oidc.create_token, **dict(poll, deviceCode=dev3["deviceCode"]))
    control(standin, "settings", {"auto_approve": True, "device_code_ttl": 0})
    dev4 = oidc.start_device_authorization(startUrl=start_url, **creds)
    expect(ex.ExpiredTokenException, oidc.create_token, **dict(poll, deviceCode=dev4["deviceCode"]))
    control(standin, "settings", {"device_code_ttl": 600})
    # A legacy registration (no scopes) gets no refresh token.
    legacy = oidc.register_client(clientName="botocore-client-1700000000", clientType="public")
    lcreds = {"clientId": legacy["clientId"], "clientSecret": legacy["clientSecret"]}
    control(standin, "settings", {"pending_polls": 0})
    dev5 = oidc.start_device_authorization(startUrl=start_url, **lcreds)
    ltok = oidc.create_token(grantType=poll["grantType"], deviceCode=dev5["deviceCode"], **lcreds)
    assert "refreshToken" not in ltok, "legacy registrations get no refresh token"
    out["device_errors"] = "ok"

    # The refresh_token grant, as botocore's SSOTokenProvider sends it; the old one is retired.
    ref = oidc.create_token(grantType="refresh_token", refreshToken=tok["refreshToken"], **creds)
    assert ref["accessToken"] != tok["accessToken"] and ref["refreshToken"] != tok["refreshToken"]
    expect(ex.InvalidGrantException, oidc.create_token, grantType="refresh_token",
           refreshToken=tok["refreshToken"], **creds)
    out["refresh"] = "ok"

    # Authorization code with PKCE, as SSOTokenFetcherAuth: the browser follows the redirect from
    # /authorize to a local listener.
    areg = oidc.register_client(
        clientName="botocore-client-honesty", clientType="public",
        grantTypes=["authorization_code", "refresh_token"],
        redirectUris=["http://127.0.0.1/oauth/callback"], issuerUrl=start_url, scopes=["sso:account:access"],
    )
    acreds = {"clientId": areg["clientId"], "clientSecret": areg["clientSecret"]}
    got = {}

    class Callback(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            got.update({k: v[0] for k, v in urllib.parse.parse_qs(urllib.parse.urlsplit(self.path).query).items()})
            got["path"] = urllib.parse.urlsplit(self.path).path
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args):
            pass

    listener = http.server.HTTPServer(("127.0.0.1", 0), Callback)
    threading.Thread(target=listener.handle_request, daemon=True).start()
    redirect_uri = f"http://127.0.0.1:{listener.server_port}/oauth/callback"
    import base64, secrets, string, uuid  # noqa: E401
    verifier = "".join(secrets.choice(string.ascii_letters + string.digits + "-._~") for _ in range(64))
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).decode()[:-1]
    state = str(uuid.uuid4())
    query = botocore.utils.percent_encode_sequence({
        "response_type": "code", "client_id": areg["clientId"], "redirect_uri": redirect_uri,
        "state": state, "code_challenge_method": "S256", "scopes": "sso:account:access",
    })
    with urllib.request.urlopen(f"{standin}/authorize?{query}&code_challenge={challenge}") as resp:
        assert resp.status == 200  # the listener's answer, after the 302
    listener.server_close()
    assert got["path"] == "/oauth/callback" and got["state"] == state and got.get("code"), got.keys()
    atok = oidc.create_token(grantType="authorization_code", code=got["code"], redirectUri=redirect_uri,
                             codeVerifier=verifier, **acreds)
    assert atok["accessToken"] and atok["refreshToken"]
    out["auth_code"] = "ok"

    # Portal: real credentials from moto, and the modeled errors.
    rc = sso.get_role_credentials(roleName=role, accountId=account, accessToken=ref["accessToken"])["roleCredentials"]
    assert isinstance(rc["expiration"], int) and rc["expiration"] > 1_000_000_000_000  # epoch ms
    arn = caller_arn(moto, rc)
    assert arn.startswith(assumed_role_prefix(role_arn)), arn
    out["arn"] = arn
    expect(sso.exceptions.UnauthorizedException, sso.get_role_credentials,
           roleName=role, accountId=account, accessToken="not-a-token")
    e = expect(botocore.exceptions.ClientError, sso.get_role_credentials,
               roleName="NotAssigned", accountId=account, accessToken=ref["accessToken"])
    assert e.response["Error"]["Code"] == "ForbiddenException", e.response
    accounts = sso.list_accounts(accessToken=ref["accessToken"])["accountList"]
    assert account in [a["accountId"] for a in accounts]
    roles = sso.list_account_roles(accessToken=ref["accessToken"], accountId=account)["roleList"]
    assert role in [r["roleName"] for r in roles]
    sso.logout(accessToken=atok["accessToken"])  # the portal forgets that access token
    expect(sso.exceptions.UnauthorizedException, sso.get_role_credentials,
           roleName=role, accountId=account, accessToken=atok["accessToken"])
    control(standin, "expire-access-tokens")
    expect(sso.exceptions.UnauthorizedException, sso.get_role_credentials,
           roleName=role, accountId=account, accessToken=ref["accessToken"])
    out["portal"] = "ok"

    # Leave a refreshable sign-in for `provider`, in the shape the AWS CLI writes (its dict, dumped
    # with _sso_json_dumps), with the access token expired so botocore must refresh it.
    now = datetime.datetime.now(datetime.timezone.utc)
    os.makedirs(CACHE_DIR, exist_ok=True)
    cached = {
        "startUrl": start_url, "region": "us-east-1", "accessToken": ref["accessToken"],
        "expiresAt": now - datetime.timedelta(minutes=5), "clientId": reg["clientId"],
        "clientSecret": reg["clientSecret"],
        "registrationExpiresAt": datetime.datetime.fromtimestamp(reg["clientSecretExpiresAt"], datetime.timezone.utc),
        "refreshToken": ref["refreshToken"],
    }
    path = os.path.join(CACHE_DIR, hashlib.sha1(b"honesty").hexdigest() + ".json")
    with open(path, "w") as f:
        f.write(botocore.tokens._sso_json_dumps(cached))
    out["start_url"] = start_url
    control(standin, "settings", {"pending_polls": 1})
    return out


def provider(standin, moto, account, role, role_arn, start_url, session_name=None):
    config = os.path.join(HOME, "config")
    with open(config, "w") as f:
        if session_name:
            f.write(f"[profile sso]\nsso_session = {session_name}\nsso_account_id = {account}\n"
                    f"sso_role_name = {role}\nregion = us-east-1\n\n"
                    f"[sso-session {session_name}]\nsso_start_url = {start_url}\nsso_region = us-east-1\n"
                    f"sso_registration_scopes = sso:account:access\n")
        else:
            f.write(f"[profile sso]\nsso_start_url = {start_url}\nsso_region = us-east-1\n"
                    f"sso_account_id = {account}\nsso_role_name = {role}\nregion = us-east-1\n")
    os.environ.update({
        "AWS_CONFIG_FILE": config,
        "AWS_SHARED_CREDENTIALS_FILE": os.path.join(HOME, "no-credentials"),
        "AWS_ENDPOINT_URL_SSO_OIDC": standin,
        "AWS_ENDPOINT_URL_SSO": standin,
    })
    for var in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        os.environ.pop(var, None)
    name = session_name if session_name else start_url
    path = os.path.join(CACHE_DIR, hashlib.sha1(name.encode()).hexdigest() + ".json")
    assert os.path.isfile(path), f"no cache file named sha1({'session name' if session_name else 'start URL'})"
    with open(path) as f:
        before = f.read()
    before_stats = stats(standin)

    session = botocore.session.Session(profile="sso")
    # The providers the default chain resolves for this profile, from botocore itself.
    resolver = session.get_component("credential_provider")
    sso_provider = resolver.get_provider("sso")
    assert isinstance(sso_provider, botocore.credentials.SSOProvider)
    creds = sso_provider.load()
    assert creds is not None and creds.method == "sso"
    frozen = creds.get_frozen_credentials()
    sts = boto3.Session(botocore_session=session).client("sts", endpoint_url=moto)
    arn = sts.get_caller_identity()["Arn"]
    assert arn.startswith(assumed_role_prefix(role_arn)), arn
    assert frozen.access_key and frozen.secret_key and frozen.token

    after_stats = stats(standin)
    with open(path) as f:
        after = f.read()
    refreshed = after_stats.get("CreateToken:refresh_token", 0) - before_stats.get("CreateToken:refresh_token", 0)
    return {
        "arn": arn,
        "refreshes": refreshed,
        "role_credentials_calls": after_stats.get("GetRoleCredentials", 0) - before_stats.get("GetRoleCredentials", 0),
        "cache_file": path,
        "cache_rewritten": before != after,
    }


def main():
    cmd, args = sys.argv[1], sys.argv[2:]
    if cmd == "wire":
        result = wire(*args)
    elif cmd == "provider":
        result = provider(*args)
    else:
        raise SystemExit(f"unknown command {cmd}")
    json.dump(result, sys.stdout)


if __name__ == "__main__":
    main()
