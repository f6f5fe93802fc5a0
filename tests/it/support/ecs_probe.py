"""What real clients do with the container-credentials variables: a test-only probe.

Runs five real clients (boto3, the AWS CLI v1 from .venv, Debian's AWS CLI v2 at /usr/bin/aws,
the AWS SDK for Rust test client of tests/sdk/rust, Debian's rclone) against small credential
servers of its own that log every request, for a list of cases (which variables are set, which
host the URI names, what the server answers). Every client then makes one signed call to a moto
with SigV4 authentication on, so "the client accepted the answer" means moto accepted a request
signed with the credentials the probe served.

    sudo .venv/bin/python tests/it/support/ecs_probe.py [--only CASE,...] [--clients a,b] [--json FILE]

It needs root: it re-executes itself under `unshare --net --mount` and runs everything (moto,
the servers, the clients) in that private network namespace, where it adds the ECS addresses
169.254.170.2 and 169.254.170.23 (and 198.18.0.1, an address no client may use over http) to
`lo`. Nothing is added to the machine's own namespace and no packet leaves the one it made.
The findings it prints are summarised in docs/container-clients.md.
"""

import argparse
import datetime
import http.server
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", ".."))
VENV = os.path.join(ROOT, ".venv", "bin")
RUST_CLIENT = os.environ.get(
    "CREDVEND_SDK_RUST_CLIENT",
    os.path.join(ROOT, "target", "sdk-rust", "debug", "credvend-sdk-rust-client"),
)
INNER = "CREDVEND_ECS_PROBE_INNER"
OUTER_NET = "CREDVEND_ECS_PROBE_OUTER_NET"

TOKEN_ENV = "token-from-env"
TOKEN_FILE = "token-from-file"

# ---------------------------------------------------------------------------------------------
# Credential servers


class Plan:
    """What a server answers: `responses[i]` for the i-th request, the last one repeated."""

    def __init__(self, creds, responses):
        self.creds = creds
        self.responses = responses


def expiration(fmt, seconds):
    t = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(seconds=seconds)
    t = t.replace(microsecond=123456)
    base = t.strftime("%Y-%m-%dT%H:%M:%S")
    return {
        "Z": base + "Z",
        "ms": base + ".123Z",
        "us": base + ".123456Z",
        "offset": base + "+00:00",
        "lower-z": base + "z",
        "space": t.strftime("%Y-%m-%d %H:%M:%S") + "Z",
        "epoch": int(t.timestamp()),
    }[fmt]


def render(plan, resp):
    """(status, content type, body bytes) of one planned response."""
    status = resp.get("status", 200)
    if "raw" in resp:
        return status, resp.get("content_type", "text/plain"), resp["raw"].encode()
    if "json" in resp:
        return status, "application/json", json.dumps(resp["json"]).encode()
    body = {
        "AccessKeyId": plan.creds["AccessKeyId"],
        "SecretAccessKey": plan.creds["SecretAccessKey"],
        "Token": plan.creds.get("SessionToken"),
        "Expiration": expiration(resp.get("format", "Z"), resp.get("expires_in", 3600)),
    }
    for k, v in resp.get("fields", {}).items():
        if v is None:
            body.pop(k, None)
        else:
            body[k] = v
    return status, "application/json", json.dumps(body).encode()


class Server:
    """One logging credential server on (host, port)."""

    def __init__(self, label, host, port):
        self.label = label
        self.plan = None
        self.requests = []
        self.lock = threading.Lock()
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self):
                with outer.lock:
                    n = len(outer.requests)
                    outer.requests.append(
                        {
                            "server": outer.label,
                            "t": time.monotonic(),
                            "method": self.command,
                            "path": self.path,
                            "headers": [[k, v] for k, v in self.headers.items()],
                        }
                    )
                    plan = outer.plan
                if plan is None:
                    status, ctype, body = 404, "application/json", b'{"code":"NoPlan","message":"no plan"}'
                else:
                    resp = plan.responses[min(n, len(plan.responses) - 1)]
                    status, ctype, body = render(plan, resp)
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_PUT = do_GET

            def log_message(self, *args):
                pass

        family = socket.AF_INET6 if ":" in host else socket.AF_INET

        class S(http.server.ThreadingHTTPServer):
            address_family = family
            daemon_threads = True

        self.httpd = S((host, port), Handler)
        self.port = self.httpd.server_address[1]
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def take(self):
        with self.lock:
            out, self.requests = self.requests, []
        return out


# ---------------------------------------------------------------------------------------------
# Clients


CLIENTS = ["boto3", "cli-v1", "cli-v2", "rust", "rclone"]


def client_command(name, moto):
    """(argv, extra env) of one client's credential load + one signed call."""
    if name == "boto3":
        return [os.path.join(VENV, "python"), os.path.join(ROOT, "tests/sdk/python/whoami.py")], {
            "AWS_ENDPOINT_URL_STS": moto
        }
    if name == "cli-v1":
        return [os.path.join(VENV, "aws"), "sts", "get-caller-identity", "--endpoint-url", moto], {}
    if name == "cli-v2":
        return ["/usr/bin/aws", "sts", "get-caller-identity", "--endpoint-url", moto], {}
    if name == "rust":
        return [RUST_CLIENT], {"AWS_ENDPOINT_URL_STS": moto}
    if name == "rclone":
        # One try of the whole command; the SDK's own retries (rclone's low-level retries) stay.
        return ["rclone", "lsd", "m:", "-vv", "--retries", "1"], {
            "RCLONE_CONFIG_M_TYPE": "s3",
            "RCLONE_CONFIG_M_PROVIDER": "Other",
            "RCLONE_CONFIG_M_ENV_AUTH": "true",
            "RCLONE_CONFIG_M_ENDPOINT": moto,
        }
    raise ValueError(name)


def run_client(name, moto, env, home):
    argv, extra = client_command(name, moto)
    full = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": home,
        "AWS_CONFIG_FILE": os.path.join(home, "config"),
        "AWS_SHARED_CREDENTIALS_FILE": os.path.join(home, "credentials"),
        "RCLONE_CONFIG": os.path.join(home, "rclone.conf"),
        "AWS_REGION": "us-east-1",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_EC2_METADATA_DISABLED": "true",
        "NO_PROXY": "*",
    }
    full.update(extra)
    full.update(env)
    t0 = time.monotonic()
    try:
        p = subprocess.run(argv, env=full, capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)
        rc, out, err = p.returncode, p.stdout, p.stderr
    except subprocess.TimeoutExpired as e:
        text = lambda b: b.decode(errors="replace") if isinstance(b, bytes) else (b or "")
        rc, out, err = "timeout", text(e.stdout), text(e.stderr)
    return {"rc": rc, "stdout": out, "stderr": err, "seconds": round(time.monotonic() - t0, 2), "t0": t0}


def identity(name, result):
    """What the signed call showed: the caller ARN (or, for rclone, the bucket it listed)."""
    out = result["stdout"]
    if result["rc"] != 0:
        return None
    try:
        if name == "boto3":
            return json.loads(out)["arn"]
        if name in ("cli-v1", "cli-v2"):
            return json.loads(out)["Arn"]
    except (ValueError, KeyError):
        return None
    if name == "rust":
        fields = dict(l.split("=", 1) for l in out.splitlines() if "=" in l)
        return f"{fields.get('arn')} account_id={fields.get('account_id')}"
    if name == "rclone":
        return "listed: " + ",".join(l.split()[-1] for l in out.splitlines() if l.strip())
    return out.strip()


def last_error(result):
    lines = [l for l in result["stderr"].splitlines() if l.strip()]
    failed = [l for l in lines if "Failed to" in l]
    if failed:
        return failed[-1][:600]
    interesting = [l for l in lines if "rror" in l or "redential" in l or "failed" in l.lower()]
    return (interesting or lines or [""])[-1][:400]


# ---------------------------------------------------------------------------------------------
# Cases


def cases(s):
    """(name, env, {server label: Plan}) for every case. `s` has the servers and credentials."""
    full = f"http://127.0.0.1:{s['lo'].port}/credentials/p"
    ok = [{}]
    out = []

    def case(name, env, plans):
        out.append((name, env, plans))

    case("a-full-token-env", {"AWS_CONTAINER_CREDENTIALS_FULL_URI": full, "AWS_CONTAINER_AUTHORIZATION_TOKEN": TOKEN_ENV},
         {"lo": Plan(s["creds_full"], ok)})
    case("b-full-token-file", {"AWS_CONTAINER_CREDENTIALS_FULL_URI": full, "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE": s["token_file"]},
         {"lo": Plan(s["creds_full"], ok)})
    case("c-full-both-tokens", {"AWS_CONTAINER_CREDENTIALS_FULL_URI": full, "AWS_CONTAINER_AUTHORIZATION_TOKEN": TOKEN_ENV,
                                "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE": s["token_file"]},
         {"lo": Plan(s["creds_full"], ok)})
    case("c2-full-no-token", {"AWS_CONTAINER_CREDENTIALS_FULL_URI": full}, {"lo": Plan(s["creds_full"], ok)})
    case("d-relative", {"AWS_CONTAINER_CREDENTIALS_RELATIVE_URI": "/v2/credentials/ID"},
         {"ecs": Plan(s["creds_relative"], ok)})
    case("d2-relative-token-env", {"AWS_CONTAINER_CREDENTIALS_RELATIVE_URI": "/v2/credentials/ID",
                                   "AWS_CONTAINER_AUTHORIZATION_TOKEN": TOKEN_ENV},
         {"ecs": Plan(s["creds_relative"], ok)})
    case("d3-relative-and-full", {"AWS_CONTAINER_CREDENTIALS_RELATIVE_URI": "/v2/credentials/ID",
                                  "AWS_CONTAINER_CREDENTIALS_FULL_URI": full, "AWS_CONTAINER_AUTHORIZATION_TOKEN": TOKEN_ENV},
         {"ecs": Plan(s["creds_relative"], ok), "lo": Plan(s["creds_full"], ok)})
    for label, host in [("localhost", f"localhost:{s['lo'].port}"), ("127.0.0.2", f"127.0.0.2:{s['lo2'].port}"),
                        ("ipv6-loopback", f"[::1]:{s['v6'].port}"), ("169.254.170.2", "169.254.170.2"),
                        ("169.254.170.23", "169.254.170.23"), ("198.18.0.1", "198.18.0.1")]:
        server = {"localhost": "lo", "127.0.0.2": "lo2", "ipv6-loopback": "v6", "169.254.170.2": "ecs",
                  "169.254.170.23": "eks", "198.18.0.1": "other"}[label]
        case(f"host-{label}", {"AWS_CONTAINER_CREDENTIALS_FULL_URI": f"http://{host}/credentials/p",
                               "AWS_CONTAINER_AUTHORIZATION_TOKEN": TOKEN_ENV},
             {server: Plan(s["creds_full"], ok)})
    env = {"AWS_CONTAINER_CREDENTIALS_FULL_URI": full, "AWS_CONTAINER_AUTHORIZATION_TOKEN": TOKEN_ENV}
    for fmt in ["ms", "us", "offset", "lower-z", "space", "epoch"]:
        case(f"e-expiration-{fmt}", env, {"lo": Plan(s["creds_full"], [{"format": fmt}])})
    case("e-no-expiration", env, {"lo": Plan(s["creds_full"], [{"fields": {"Expiration": None}}])})
    case("e-expired", env, {"lo": Plan(s["creds_full"], [{"expires_in": -600}])})
    case("e-expires-in-4-min", env, {"lo": Plan(s["creds_full"], [{"expires_in": 240}])})
    case("e-account-and-role-arn", env, {"lo": Plan(s["creds_full"], [{"fields": {
        "AccountId": "123456789012", "RoleArn": "arn:aws:iam::123456789012:role/probe"}}])})
    case("e-code-success-fields", env, {"lo": Plan(s["creds_full"], [{"fields": {
        "Code": "Success", "Type": "AWS-HMAC", "LastUpdated": expiration("Z", 0)}}])})
    case("e-no-token-long-term-key", env, {"lo": Plan(s["admin"], [{"fields": {"Token": None}}])})
    case("e-session-token-name", env, {"lo": Plan(s["creds_full"], [{"fields": {
        "Token": None, "SessionToken": s["creds_full"]["SessionToken"]}}])})
    case("e-extra-unknown-field", env, {"lo": Plan(s["creds_full"], [{"fields": {"Unexpected": {"nested": [1]}}}])})
    case("e-not-json", env, {"lo": Plan(s["creds_full"], [{"raw": "<html>oops</html>", "content_type": "text/html"}])})
    for status in [400, 401, 403, 404, 429, 500, 503]:
        case(f"f-status-{status}", env, {"lo": Plan(s["creds_full"], [
            {"status": status, "json": {"code": f"Probe{status}", "message": f"probe says {status}"}}])})
    case("f-503-then-ok", env, {"lo": Plan(s["creds_full"], [
        {"status": 503, "json": {"code": "Pending", "message": "try again"}}, {}])})
    return out


# ---------------------------------------------------------------------------------------------
# Setup inside the namespace


def sh(*argv):
    subprocess.run(argv, check=True, stdin=subprocess.DEVNULL)


def start_moto():
    p = subprocess.Popen([os.path.join(VENV, "moto_server"), "-H", "127.0.0.1", "-p", "0"],
                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    for line in p.stderr:
        if "Running on " in line:
            url = line.split("Running on ", 1)[1].strip()
            break
    else:
        raise SystemExit("moto did not start")
    threading.Thread(target=lambda: [None for _ in p.stderr], daemon=True).start()
    admin = subprocess.run([os.path.join(VENV, "python"), os.path.join(ROOT, "scripts/seed_admin.py"), url],
                           check=True, capture_output=True, text=True).stdout.strip()
    return p, url, admin


def seed(url, admin):
    """Credentials of two role sessions ("full", "relative") and the admin's long-term key."""
    import boto3

    ak, sk = admin.split(":", 1)
    s = boto3.session.Session(aws_access_key_id=ak, aws_secret_access_key=sk, region_name="us-east-1")
    iam = s.client("iam", endpoint_url=url)
    me = iam.get_user()["User"]["Arn"]
    trust = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Principal": {"AWS": me}, "Action": "sts:AssumeRole"}]}
    arn = iam.create_role(RoleName="probe", AssumeRolePolicyDocument=json.dumps(trust))["Role"]["Arn"]
    iam.put_role_policy(RoleName="probe", PolicyName="all", PolicyDocument=json.dumps(
        {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]}))
    s.client("s3", endpoint_url=url).create_bucket(Bucket="probe-bucket")
    sts = s.client("sts", endpoint_url=url)
    creds = {}
    for name in ["full", "relative"]:
        c = sts.assume_role(RoleArn=arn, RoleSessionName=name, DurationSeconds=3600)["Credentials"]
        creds[name] = {k: c[k] for k in ["AccessKeyId", "SecretAccessKey", "SessionToken"]}
    return creds["full"], creds["relative"], {"AccessKeyId": ak, "SecretAccessKey": sk}


def versions():
    out = {}
    for name, argv in [("cli-v1", [os.path.join(VENV, "aws"), "--version"]), ("cli-v2", ["/usr/bin/aws", "--version"]),
                       ("rclone", ["rclone", "version"])]:
        p = subprocess.run(argv, capture_output=True, text=True)
        out[name] = (p.stdout or p.stderr).splitlines()[0]
    p = subprocess.run([os.path.join(VENV, "python"), "-c", "import boto3, botocore; print(boto3.__version__, botocore.__version__)"],
                       capture_output=True, text=True)
    out["boto3"] = "boto3/botocore " + p.stdout.strip()
    lock = open(os.path.join(ROOT, "tests/sdk/rust/Cargo.lock")).read().split("[[package]]")
    out["rust"] = " ".join(
        f"{n}/{b.split('version = ')[1].split(chr(10))[0].strip(chr(34))}"
        for b in lock for n in ["aws-config", "aws-sdk-sts"] if f'name = "{n}"' in b)
    return out


def inner(args):
    if os.environ.get(OUTER_NET) == os.readlink("/proc/self/ns/net"):
        raise SystemExit("refusing to change the network: not in a private network namespace")
    ifaces = [l.split(":")[0].strip() for l in open("/proc/self/net/dev").read().splitlines()[2:]]
    if ifaces != ["lo"]:
        raise SystemExit(f"refusing to change the network: interfaces {ifaces}")
    sh("ip", "link", "set", "lo", "up")
    for addr in ["169.254.170.2/32", "169.254.170.23/32", "198.18.0.1/32"]:
        sh("ip", "addr", "add", addr, "dev", "lo")
    moto_proc, moto, admin = start_moto()
    try:
        creds_full, creds_relative, admin_key = seed(moto, admin)
        home = tempfile.mkdtemp(prefix="ecs-probe-")
        for f in ["config", "credentials", "rclone.conf"]:
            open(os.path.join(home, f), "w").close()
        token_file = os.path.join(home, "token")
        with open(token_file, "w") as f:
            f.write(TOKEN_FILE)
        servers = {
            "lo": Server("127.0.0.1", "127.0.0.1", 0),
            "lo2": Server("127.0.0.2", "127.0.0.2", 0),
            "v6": Server("[::1]", "::1", 0),
            "ecs": Server("169.254.170.2:80", "169.254.170.2", 80),
            "eks": Server("169.254.170.23:80", "169.254.170.23", 80),
            "other": Server("198.18.0.1:80", "198.18.0.1", 80),
        }
        s = dict(servers, creds_full=creds_full, creds_relative=creds_relative, admin=admin_key, token_file=token_file)
        only = set(args.only.split(",")) if args.only else None
        clients = args.clients.split(",") if args.clients else CLIENTS
        report = {"versions": versions(), "keys": {"full": creds_full["AccessKeyId"],
                                                   "relative": creds_relative["AccessKeyId"], "admin": admin_key["AccessKeyId"]},
                  "cases": []}
        print(json.dumps(report["versions"], indent=1), flush=True)
        for name, env, plans in cases(s):
            if only and name not in only:
                continue
            for client in clients:
                for label, srv in servers.items():
                    srv.plan = plans.get(label)
                    srv.take()
                result = run_client(client, moto, env, home)
                reqs = [r for srv in servers.values() for r in srv.take()]
                for r in reqs:
                    r["t"] = round(r["t"] - result["t0"], 2)
                entry = {
                    "case": name, "client": client, "rc": result["rc"], "seconds": result["seconds"],
                    "identity": identity(client, result), "requests": reqs,
                    "error": None if result["rc"] == 0 else last_error(result),
                }
                if args.verbose:
                    entry["stderr"] = result["stderr"][-3000:]
                report["cases"].append(entry)
                summary = [(r["server"], r["t"], dict((k.lower(), v) for k, v in r["headers"]).get("authorization")) for r in reqs]
                print(f"{name:28} {client:7} rc={result['rc']!s:3} {result['seconds']:5}s id={entry['identity']} "
                      f"reqs={summary} err={entry['error']}", flush=True)
        if args.json:
            with open(args.json, "w") as f:
                json.dump(report, f, indent=1)
        shutil.rmtree(home, ignore_errors=True)
    finally:
        moto_proc.terminate()
        moto_proc.wait()


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", help="comma-separated case names")
    ap.add_argument("--clients", help="comma-separated clients: " + ",".join(CLIENTS))
    ap.add_argument("--json", help="write the full report (every request's headers) here")
    ap.add_argument("--verbose", action="store_true", help="keep each client's stderr in the JSON report")
    args = ap.parse_args()
    if os.environ.get(INNER):
        inner(args)
        return
    env = dict(os.environ, **{INNER: "1", OUTER_NET: os.readlink("/proc/self/ns/net")})
    sys.exit(subprocess.run(["unshare", "--net", "--mount", "--", sys.executable, *sys.argv], env=env).returncode)


if __name__ == "__main__":
    main()
