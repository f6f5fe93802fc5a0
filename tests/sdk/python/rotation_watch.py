"""Watches botocore across credential rotations of an IMDS endpoint.

Repeatedly builds a fresh botocore session (so every lookup goes through the default chain and
the IMDS fetcher again, as a new process would) and loads its credentials, until it has seen
`--keys` distinct access keys or `--deadline` seconds pass. Every botocore log record at DEBUG
and above is captured. Finally it calls STS GetCallerIdentity with the last credentials.

Prints one JSON object: the fetch count, the access keys in the order seen, the least lifetime
left on any credentials botocore loaded (seconds), every captured log line that mentions an
"expiration extension", and the caller ARN. Exit status 0 unless something failed outright.
"""

import argparse
import datetime
import json
import logging
import sys
import time

import botocore.session


class Capture(logging.Handler):
    def __init__(self):
        super().__init__(level=logging.DEBUG)
        self.lines = []

    def emit(self, record):
        self.lines.append(f"{record.levelname} {record.name}: {record.getMessage()}")


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--keys", type=int, required=True)
    parser.add_argument("--deadline", type=float, required=True)
    args = parser.parse_args()

    capture = Capture()
    logger = logging.getLogger("botocore")
    logger.setLevel(logging.DEBUG)
    logger.addHandler(capture)

    keys = []
    fetches = 0
    least_left = None
    session = None
    end = time.monotonic() + args.deadline
    while len(keys) < args.keys and time.monotonic() < end:
        session = botocore.session.get_session()
        creds = session.get_credentials()
        if creds is None:
            print("no credentials found by the default chain", file=sys.stderr)
            return 1
        fetches += 1
        if creds.method != "iam-role":
            print(f"credentials came from {creds.method}, not IMDS", file=sys.stderr)
            return 1
        frozen = creds.get_frozen_credentials()
        if not keys or keys[-1] != frozen.access_key:
            keys.append(frozen.access_key)
        # The expiry botocore itself holds (after any "extension" it applied).
        left = (creds._expiry_time - datetime.datetime.now(datetime.timezone.utc)).total_seconds()
        least_left = left if least_left is None else min(least_left, left)

    arn = None
    if session is not None:
        arn = session.create_client("sts").get_caller_identity()["Arn"]
    print(
        json.dumps(
            {
                "fetches": fetches,
                "keys": keys,
                "least_left": least_left,
                "extension_lines": [l for l in capture.lines if "expiration extension" in l],
                "log_lines": len(capture.lines),
                "arn": arn,
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
