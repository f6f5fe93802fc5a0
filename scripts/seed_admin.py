"""Seed a fresh moto server with an admin IAM user, then switch SigV4 authentication on.

Prints "ACCESS_KEY_ID:SECRET" of the admin user. Everything after this must be signed.
"""
import json
import sys
import urllib.request

import boto3

url = sys.argv[1]
session = boto3.session.Session(
    aws_access_key_id="AKIDSEEDING", aws_secret_access_key="seeding", region_name="us-east-1"
)
iam = session.client("iam", endpoint_url=url)
iam.create_user(UserName="credvend-admin")
iam.put_user_policy(
    UserName="credvend-admin",
    PolicyName="everything",
    PolicyDocument=json.dumps(
        {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]}
    ),
)
key = iam.create_access_key(UserName="credvend-admin")["AccessKey"]
req = urllib.request.Request(
    url + "/moto-api/reset-auth", data=b"0", method="POST", headers={"Content-Type": "text/plain"}
)
with urllib.request.urlopen(req) as resp:
    assert json.load(resp)["status"] == "ok"
print(f"{key['AccessKeyId']}:{key['SecretAccessKey']}")
