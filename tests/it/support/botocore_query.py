"""Independent query-protocol serializer for the differential test: a real botocore client.

Reads a JSON list of cases on stdin:
    {"service": "sts"|"iam", "operation": "AssumeRole", "params": {...},
     "region": "us-east-1", "endpoint_url": "http://127.0.0.1:5000/" or null}
and prints a JSON list of what botocore would send:
    {"body": "...", "url": "...", "signing_region": "..." or null}

Each call goes through the whole client (parameter handlers, the query serializer, endpoint
resolution, signing, AWSRequest body preparation); a `before-send` hook captures the prepared
request and aborts before anything reaches the network. Parameters are passed in the member
order of the operation's input shape (the order the AWS CLI uses), whatever order the JSON
object has, so the test also holds the Rust side to that order. Parameter validation is off so
that generated values outside the model's length limits are serialized too.
"""
import json
import sys

import botocore.session
from botocore.config import Config


class Captured(Exception):
    def __init__(self, request):
        super().__init__("captured")
        self.request = request


def capture(request, **_):
    raise Captured(request)


session = botocore.session.get_session()
clients = {}


def client_for(service, region, endpoint_url):
    k = (service, region, endpoint_url)
    if k not in clients:
        c = session.create_client(
            service,
            region_name=region,
            endpoint_url=endpoint_url,
            aws_access_key_id="AKIDEXAMPLE",
            aws_secret_access_key="wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY",
            config=Config(parameter_validation=False, retries={"total_max_attempts": 1}),
        )
        c.meta.events.register("before-send", capture)
        clients[k] = c
    return clients[k]


def signing_region(auth):
    # "AWS4-HMAC-SHA256 Credential=AKID/20150830/us-east-1/iam/aws4_request, ..."
    if not auth:
        return None
    if isinstance(auth, bytes):
        auth = auth.decode()
    return auth.split("Credential=")[1].split(",")[0].split("/")[2]


out = []
for case in json.load(sys.stdin):
    client = client_for(case["service"], case["region"], case.get("endpoint_url"))
    model = client.meta.service_model.operation_model(case["operation"])
    given = case["params"]
    members = list(model.input_shape.members) if model.input_shape else []
    assert set(given) <= set(members), (case["operation"], set(given) - set(members))
    params = {name: given[name] for name in members if name in given}
    method = getattr(client, botocore.xform_name(case["operation"]))
    try:
        method(**params)
        raise AssertionError("the before-send hook did not run")
    except Captured as c:
        body = c.request.body
        if isinstance(body, bytes):
            body = body.decode("ascii")
        out.append(
            {
                "body": body,
                "url": c.request.url,
                "signing_region": signing_region(c.request.headers.get("Authorization")),
            }
        )
json.dump(out, sys.stdout)
