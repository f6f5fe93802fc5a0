"""Independent SigV4 signer for the differential test: botocore's own SigV4Auth.

Reads a JSON list of requests on stdin, prints a JSON list of Authorization header values.
The clock is pinned by replacing botocore.auth.get_current_datetime.
"""
import datetime
import json
import sys

import botocore.auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

out = []
for case in json.load(sys.stdin):
    when = datetime.datetime.strptime(case["time"], "%Y%m%dT%H%M%SZ")
    botocore.auth.get_current_datetime = lambda when=when: when
    request = AWSRequest(
        method="POST",
        url=case["url"],
        data=case["body"].encode("utf-8"),
        headers={"Content-Type": "application/x-www-form-urlencoded; charset=utf-8"},
    )
    creds = Credentials(case["access_key_id"], case["secret"], case.get("token"))
    botocore.auth.SigV4Auth(creds, "sts", case["region"]).add_auth(request)
    out.append(request.headers["Authorization"])
json.dump(out, sys.stdout)
