"""Fetches credentials with botocore's own metadata fetchers, as an SDK on a deadline does: a
1 s timeout and one attempt each, `--count` times in a row, over IMDS (`--imds URL`) and/or the
ECS endpoint (`--ecs URL --token T`). Prints one JSON object: successes, failures (with their
errors) and the slowest fetch in seconds. Exit status 0 always; the test judges.
"""

import argparse
import json
import time

from botocore.utils import ContainerMetadataFetcher, InstanceMetadataFetcher


class OneSecondContainerFetcher(ContainerMetadataFetcher):
    TIMEOUT_SECONDS = 1
    RETRY_ATTEMPTS = 1


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--count", type=int, default=20)
    parser.add_argument("--imds")
    parser.add_argument("--ecs")
    parser.add_argument("--token")
    args = parser.parse_args()

    ok, failures, slowest = 0, [], 0.0
    for _ in range(args.count):
        for kind in ("imds", "ecs"):
            url = getattr(args, kind)
            if not url:
                continue
            start = time.monotonic()
            try:
                if kind == "imds":
                    fetcher = InstanceMetadataFetcher(timeout=1, num_attempts=1, base_url=url)
                    creds = fetcher.retrieve_iam_role_credentials()
                else:
                    fetcher = OneSecondContainerFetcher()
                    creds = fetcher.retrieve_full_uri(url, headers={"Authorization": args.token})
                if creds and creds.get("access_key", creds.get("AccessKeyId")):
                    ok += 1
                else:
                    failures.append(f"{kind}: no credentials: {creds!r}"[:300])
            except Exception as e:  # noqa: BLE001 - every failure counts
                failures.append(f"{kind}: {type(e).__name__}: {e}"[:300])
            slowest = max(slowest, time.monotonic() - start)
    print(json.dumps({"ok": ok, "failures": failures, "slowest": slowest}))


if __name__ == "__main__":
    main()
