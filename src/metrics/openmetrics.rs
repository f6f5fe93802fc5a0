//! The OpenMetrics 1.0 text exposition format, written by hand. Pure: metric families in, text
//! out.
//!
//! What the format demands, from the specification (OpenMetrics 1.0, "Text format"; the
//! OpenObservability/OpenMetrics repository, `specification/OpenMetrics.md`):
//! - each family starts with its metadata lines in the order `# TYPE`, `# UNIT`, `# HELP`; a
//!   family's name ends with `_` + its unit when it has one; families, metrics and points are
//!   never interleaved, and no other line starts with `#`;
//! - a counter's sample is `NAME_total` (plus an optional `NAME_created`), a gauge's is `NAME`, an
//!   info's is `NAME_info` with the value 1, a state set has one sample per state with a label
//!   named like the family whose value is 0 or 1, a histogram has cumulative `NAME_bucket`
//!   samples in increasing order of `le` ending with `le="+Inf"`, then `NAME_count` (equal to the
//!   `+Inf` bucket) and `NAME_sum`;
//! - label values and `# HELP` text escape line feed as `\n`, `"` as `\"` and `\` as `\\`;
//! - integers have no decimal point, `+Inf`/`-Inf`/`NaN` are spelled so, and the exposition ends
//!   with `# EOF` and a line feed;
//! - the content type is [`CONTENT_TYPE`].
//!
//! Families are written in the order given and metrics in the order pushed: the caller decides
//! (and keeps it stable between scrapes).

use std::fmt::Write;

/// The `Content-Type` of an OpenMetrics text exposition.
pub(crate) const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// A metric family's type (`# TYPE` value).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    /// A monotonic total (`NAME_total`).
    Counter,
    /// A value that goes up and down (`NAME`).
    Gauge,
    /// One of several states holds (`NAME{NAME="state"} 0|1`).
    StateSet,
    /// Constant facts in labels (`NAME_info{...} 1`).
    Info,
    /// Observations counted in buckets (`NAME_bucket`, `NAME_count`, `NAME_sum`).
    Histogram,
}

impl Kind {
    fn as_str(self) -> &'static str {
        match self {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
            Kind::StateSet => "stateset",
            Kind::Info => "info",
            Kind::Histogram => "histogram",
        }
    }
}

/// Label names and values of one metric. Names are code (checked by [`is_label_name`] in debug
/// builds); values are escaped when rendered.
pub(crate) type Labels = Vec<(&'static str, String)>;

/// The value of one metric.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Point {
    /// A counter's total, and when it started counting (Unix seconds), if known.
    Counter {
        /// The total.
        total: u64,
        /// When it started from 0.
        created: Option<f64>,
    },
    /// A gauge's value.
    Gauge(f64),
    /// The states of a state set and whether each holds.
    StateSet(Vec<(&'static str, bool)>),
    /// An info metric (its labels are the information).
    Info,
    /// A histogram: cumulative counts by upper bound (`le`, written as given: the caller passes
    /// canonical numbers, the last being `+Inf`) and the sum of the observations.
    Histogram {
        /// `(le, observations <= le)`, increasing, ending with `("+Inf", count)`.
        buckets: Vec<(&'static str, u64)>,
        /// Sum of the observations.
        sum: f64,
    },
}

/// One metric: its labels and value.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Metric {
    labels: Labels,
    point: Point,
}

/// A metric family: name, metadata and metrics.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Family {
    name: &'static str,
    kind: Kind,
    unit: Option<&'static str>,
    help: &'static str,
    metrics: Vec<Metric>,
}

impl Family {
    /// An empty family. `name` must be a valid metric name without a type suffix.
    pub fn new(name: &'static str, kind: Kind, help: &'static str) -> Family {
        debug_assert!(is_metric_name(name), "metric name {name:?}");
        Family {
            name,
            kind,
            unit: None,
            help,
            metrics: Vec::new(),
        }
    }

    /// Declares the unit; the name must end with `_` + `unit`.
    pub fn unit(mut self, unit: &'static str) -> Family {
        debug_assert!(
            self.name.ends_with(&format!("_{unit}")),
            "{} must end with _{unit}",
            self.name
        );
        self.unit = Some(unit);
        self
    }

    /// Adds a metric.
    pub fn push(&mut self, labels: Labels, point: Point) {
        debug_assert!(
            labels.iter().all(|(n, _)| is_label_name(n)),
            "label names of {}: {labels:?}",
            self.name
        );
        debug_assert!(
            matches!(
                (self.kind, &point),
                (Kind::Counter, Point::Counter { .. })
                    | (Kind::Gauge, Point::Gauge(_))
                    | (Kind::StateSet, Point::StateSet(_))
                    | (Kind::Info, Point::Info)
                    | (Kind::Histogram, Point::Histogram { .. })
            ),
            "a {:?} point in the {:?} family {}",
            point,
            self.kind,
            self.name
        );
        self.metrics.push(Metric { labels, point });
    }
}

/// Whether `s` is a metric name (`[a-zA-Z_:][a-zA-Z0-9_:]*`).
pub(crate) fn is_metric_name(s: &str) -> bool {
    let mut chars = s.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

/// Whether `s` is a label name (`[a-zA-Z_][a-zA-Z0-9_]*`).
pub(crate) fn is_label_name(s: &str) -> bool {
    let mut chars = s.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// `s` escaped for a label value or `# HELP` text.
fn escape(out: &mut String, s: &str) {
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

/// A float as the format spells it: no exponent (Rust's shortest round-trip form), `+Inf`,
/// `-Inf`, `NaN`.
fn number(out: &mut String, v: f64) {
    if v.is_nan() {
        out.push_str("NaN");
    } else if v.is_infinite() {
        out.push_str(if v > 0.0 { "+Inf" } else { "-Inf" });
    } else {
        let _ = write!(out, "{v}");
    }
}

/// `{a="x",b="y"}` for `labels` plus `extra` (a state or `le`); nothing when both are empty.
fn labels(out: &mut String, labels: &Labels, extra: Option<(&str, &str)>) {
    if labels.is_empty() && extra.is_none() {
        return;
    }
    out.push('{');
    let all = labels.iter().map(|(n, v)| (*n, v.as_str())).chain(extra);
    for (i, (name, value)) in all.enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(name);
        out.push_str("=\"");
        escape(out, value);
        out.push('"');
    }
    out.push('}');
}

/// One sample line: `NAMESUFFIX{labels} value`.
fn sample(
    out: &mut String,
    name: &str,
    suffix: &str,
    m: &Labels,
    extra: Option<(&str, &str)>,
    value: impl FnOnce(&mut String),
) {
    out.push_str(name);
    out.push_str(suffix);
    labels(out, m, extra);
    out.push(' ');
    value(out);
    out.push('\n');
}

fn metric(out: &mut String, name: &str, m: &Metric) {
    let l = &m.labels;
    match &m.point {
        Point::Counter { total, created } => {
            sample(out, name, "_total", l, None, |o| {
                let _ = write!(o, "{total}");
            });
            if let Some(t) = created {
                sample(out, name, "_created", l, None, |o| number(o, *t));
            }
        }
        Point::Gauge(v) => sample(out, name, "", l, None, |o| number(o, *v)),
        Point::StateSet(states) => {
            for (state, on) in states {
                sample(out, name, "", l, Some((name, state)), |o| {
                    o.push(if *on { '1' } else { '0' })
                });
            }
        }
        Point::Info => sample(out, name, "_info", l, None, |o| o.push('1')),
        Point::Histogram { buckets, sum } => {
            debug_assert_eq!(buckets.last().map(|b| b.0), Some("+Inf"));
            for (le, count) in buckets {
                sample(out, name, "_bucket", l, Some(("le", le)), |o| {
                    let _ = write!(o, "{count}");
                });
            }
            let count = buckets.last().map_or(0, |b| b.1);
            sample(out, name, "_count", l, None, |o| {
                let _ = write!(o, "{count}");
            });
            sample(out, name, "_sum", l, None, |o| number(o, *sum));
        }
    }
}

/// The exposition of `families`, `# EOF` included.
pub(crate) fn render(families: &[Family]) -> String {
    debug_assert!(
        {
            let mut names: Vec<&str> = families.iter().map(|f| f.name).collect();
            names.sort_unstable();
            names.windows(2).all(|w| w[0] != w[1])
        },
        "duplicate family names"
    );
    let mut out = String::with_capacity(families.len() * 256);
    for f in families {
        let _ = writeln!(out, "# TYPE {} {}", f.name, f.kind.as_str());
        if let Some(unit) = f.unit {
            let _ = writeln!(out, "# UNIT {} {unit}", f.name);
        }
        if !f.help.is_empty() {
            let _ = write!(out, "# HELP {} ", f.name);
            escape(&mut out, f.help);
            out.push('\n');
        }
        for m in &f.metrics {
            metric(&mut out, f.name, m);
        }
    }
    out.push_str("# EOF\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn l(pairs: &[(&'static str, &str)]) -> Labels {
        pairs.iter().map(|(n, v)| (*n, (*v).to_owned())).collect()
    }

    #[test]
    fn metadata_comes_first_in_order_and_eof_ends_it() {
        let mut c = Family::new("x_requests", Kind::Counter, "Requests.");
        c.push(
            l(&[("profile", "dev")]),
            Point::Counter {
                total: 3,
                created: Some(1_700_000_000.5),
            },
        );
        let mut g = Family::new("x_left_seconds", Kind::Gauge, "Left.").unit("seconds");
        g.push(l(&[]), Point::Gauge(12.25));
        let text = render(&[c, g]);
        assert_eq!(
            text,
            "# TYPE x_requests counter\n\
             # HELP x_requests Requests.\n\
             x_requests_total{profile=\"dev\"} 3\n\
             x_requests_created{profile=\"dev\"} 1700000000.5\n\
             # TYPE x_left_seconds gauge\n\
             # UNIT x_left_seconds seconds\n\
             # HELP x_left_seconds Left.\n\
             x_left_seconds 12.25\n\
             # EOF\n"
        );
    }

    #[test]
    fn nothing_at_all_is_still_a_valid_exposition() {
        assert_eq!(render(&[]), "# EOF\n");
        let empty = Family::new("x_gauge", Kind::Gauge, "");
        assert_eq!(render(&[empty]), "# TYPE x_gauge gauge\n# EOF\n");
    }

    #[test]
    fn label_values_and_help_are_escaped() {
        let mut f = Family::new("x", Kind::Gauge, "a \\ b\nc \"d\"");
        f.push(
            l(&[("profile", "we\"ird\\na\nme"), ("b", "ünï cödé {},=")]),
            Point::Gauge(1.0),
        );
        let text = render(&[f]);
        assert!(text.contains("# HELP x a \\\\ b\\nc \\\"d\\\"\n"), "{text}");
        assert!(
            text.contains("x{profile=\"we\\\"ird\\\\na\\nme\",b=\"ünï cödé {},=\"} 1\n"),
            "{text}"
        );
        assert_eq!(text.lines().count(), 4, "no raw line feed survives: {text}");
    }

    #[test]
    fn numbers_are_spelled_as_the_format_wants() {
        let mut f = Family::new("x", Kind::Gauge, "");
        for v in [
            0.0,
            -3.0,
            1e-7,
            123456789012.0,
            f64::INFINITY,
            f64::NEG_INFINITY,
            f64::NAN,
        ] {
            f.push(l(&[]), Point::Gauge(v));
        }
        let values: Vec<String> = render(&[f])
            .lines()
            .filter(|s| s.starts_with("x "))
            .map(|s| s[2..].to_owned())
            .collect();
        assert_eq!(
            values,
            [
                "0",
                "-3",
                "0.0000001",
                "123456789012",
                "+Inf",
                "-Inf",
                "NaN"
            ]
        );
    }

    #[test]
    fn state_sets_label_each_state_with_the_family_name() {
        let mut f = Family::new("x_phase", Kind::StateSet, "Phase.");
        f.push(
            l(&[("profile", "p")]),
            Point::StateSet(vec![("fresh", true), ("error", false)]),
        );
        let text = render(&[f]);
        assert!(text.contains(
            "x_phase{profile=\"p\",x_phase=\"fresh\"} 1\nx_phase{profile=\"p\",x_phase=\"error\"} 0\n"
        ));
    }

    #[test]
    fn histograms_have_buckets_in_order_then_count_and_sum() {
        let mut f = Family::new("x_duration_seconds", Kind::Histogram, "Took.").unit("seconds");
        f.push(
            l(&[("action", "AssumeRole")]),
            Point::Histogram {
                buckets: vec![("0.1", 1), ("1.0", 3), ("+Inf", 4)],
                sum: 7.5,
            },
        );
        let mut info = Family::new("x_build", Kind::Info, "Build.");
        info.push(l(&[("version", "1.2.3")]), Point::Info);
        let text = render(&[f, info]);
        let body: Vec<&str> = text.lines().filter(|s| !s.starts_with('#')).collect();
        assert_eq!(
            body,
            [
                "x_duration_seconds_bucket{action=\"AssumeRole\",le=\"0.1\"} 1",
                "x_duration_seconds_bucket{action=\"AssumeRole\",le=\"1.0\"} 3",
                "x_duration_seconds_bucket{action=\"AssumeRole\",le=\"+Inf\"} 4",
                "x_duration_seconds_count{action=\"AssumeRole\"} 4",
                "x_duration_seconds_sum{action=\"AssumeRole\"} 7.5",
                "x_build_info{version=\"1.2.3\"} 1",
            ]
        );
        assert!(text.ends_with("# EOF\n"));
    }

    #[test]
    fn names_are_checked() {
        for ok in ["credvend_x", "_a:b", "a1"] {
            assert!(is_metric_name(ok), "{ok}");
        }
        for bad in ["", "1a", "a-b", "a b", "ä"] {
            assert!(!is_metric_name(bad), "{bad}");
        }
        assert!(is_label_name("profile") && is_label_name("_x1"));
        assert!(!is_label_name("a:b") && !is_label_name("9") && !is_label_name(""));
    }
}
