"""Parses an OpenMetrics text exposition read from stdin with prometheus_client's OpenMetrics
parser (prometheus_client.openmetrics.parser.text_string_to_metric_families, which rejects an
invalid exposition as a whole: missing `# EOF`, bad escaping, interleaved families, unordered or
inconsistent histogram buckets...) and prints every sample as one JSON list:
[{"family", "type", "unit", "name", "labels", "value"}]. Exits 1 with the parser's error on
stderr when the text is not valid OpenMetrics."""

import json
import math
import sys

from prometheus_client.openmetrics.parser import text_string_to_metric_families


def main():
    text = sys.stdin.read()
    samples = []
    try:
        for family in text_string_to_metric_families(text):
            for s in family.samples:
                value = s.value if math.isfinite(s.value) else str(s.value)
                samples.append({
                    "family": family.name,
                    "type": family.type,
                    "unit": family.unit,
                    "name": s.name,
                    "labels": s.labels,
                    "value": value,
                })
    except ValueError as e:
        print(f"not valid OpenMetrics: {e!r}", file=sys.stderr)
        sys.exit(1)
    json.dump(samples, sys.stdout)


if __name__ == "__main__":
    main()
