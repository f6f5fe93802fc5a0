"""boto3 as an application uses it: the default credential chain, then STS GetCallerIdentity.

Prints one JSON object: the provider that supplied the credentials (`method`, e.g. "iam-role"
for IMDS, "container-role" for the ECS endpoint), the access key id it loaded, and the caller
identity ARN. Exits 1 with the reason on stderr when there are no credentials or STS refuses.
The STS endpoint and region come from the environment (AWS_ENDPOINT_URL_STS, AWS_REGION).
"""

import json
import sys

import boto3
import botocore.exceptions


def main():
    session = boto3.Session()
    creds = session.get_credentials()
    if creds is None:
        print("no credentials found by the default chain", file=sys.stderr)
        return 1
    frozen = creds.get_frozen_credentials()
    try:
        identity = session.client("sts").get_caller_identity()
    except botocore.exceptions.BotoCoreError as e:
        print(f"GetCallerIdentity: {e}", file=sys.stderr)
        return 1
    except botocore.exceptions.ClientError as e:
        print(f"GetCallerIdentity: {e}", file=sys.stderr)
        return 1
    print(
        json.dumps(
            {
                "method": creds.method,
                "access_key_id": frozen.access_key,
                "arn": identity["Arn"],
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
