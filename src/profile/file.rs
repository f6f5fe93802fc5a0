//! Parser for the AWS shared config and credentials files, following the rules the AWS SDKs
//! share (checked against AWS's language-neutral parser test suite in `tests/data/profile/`).
//!
//! Parsing happens in two steps, as in the SDKs:
//! 1. [`parse`] reads one file into ordered [`RawSection`]s. Syntax errors (a property before any
//!    section, a line without `=`, an unterminated `[`...) fail the whole file with a
//!    [`ParseError`] naming the line. Things the SDKs silently skip (invalid names, sections that
//!    do not belong in this kind of file) are kept out of use and reported as warnings.
//! 2. [`merge`] combines the config and credentials files into the [`ProfileSet`] the SDKs see.
//!
//! Rules implemented:
//! - Lines end with `\n` or `\r\n`. Whitespace means space and tab only. A leading UTF-8 byte order
//!   mark is ignored (a leniency the SDK suite does not cover).
//! - Blank lines are ignored everywhere, also between continuation lines.
//! - A line whose first character is `#` or `;` is a comment. An indented `#` line is *not* a
//!   comment but a continuation line, as in the SDKs.
//! - `[...]` starts a section; the line must start with `[` in the first column. Anything after a
//!   `#` or `;` in a section line is a comment (no whitespace needed: `[profile a];x` is fine);
//!   otherwise the trimmed line must end with `]`. The text inside is trimmed.
//! - Config file: `[default]`, `[profile NAME]`, `[sso-session NAME]`, `[services NAME]`; the prefix
//!   and name are separated by spaces or tabs. `[profile default]` wins over `[default]`: when the
//!   file has both, every `[default]` section is ignored. Other sections (`[foo]`,
//!   `[profilefoo]`, `[unknown x]`) are ignored with a warning.
//! - Credentials file: every `[NAME]` section is a profile; `[profile x]` and any other
//!   `[prefix x]` section are ignored with a warning.
//! - Names (of profiles, sessions, services, properties) must match `[A-Za-z0-9_\-/.%@:+]+`;
//!   sections and properties with other names are ignored with a warning. Profile names keep their
//!   case; property and sub-property names are case-insensitive and stored lower-cased.
//! - `name = value`: split at the first `=`; both sides trimmed. In property lines `#` or `;`
//!   starts a comment only when preceded by whitespace (`a = b#c` has the value `b#c`).
//! - A line starting with whitespace continues the previous property: its trimmed text is appended
//!   after a `\n`, comment characters included. If that property's value was empty, the
//!   continuation lines are sub-properties instead, each of which must be `name = value`
//!   (`s3 =\n  max_concurrent_requests = 10`).
//! - Sections with the same name in one file merge; later properties replace earlier ones.
//!   Across files, credentials-file properties replace config-file properties of the same profile.

use std::collections::BTreeMap;
use std::fmt;

/// Which of the two shared files a text came from; decides how section headers are read.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FileKind {
    /// The shared config file (`~/.aws/config`): `[default]`, `[profile NAME]`,
    /// `[sso-session NAME]` and `[services NAME]` sections.
    Config,
    /// The shared credentials file (`~/.aws/credentials`): every `[NAME]` section is a profile.
    Credentials,
}

impl FileKind {
    fn label(self) -> &'static str {
        match self {
            FileKind::Config => "config file",
            FileKind::Credentials => "credentials file",
        }
    }
}

/// What is wrong with a line. The messages never quote the line, so a malformed line holding a
/// secret cannot leak through an error.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ParseErrorKind {
    /// A property or continuation line before the first `[section]` line.
    PropertyOutsideSection,
    /// A line starting with `[` that does not end with `]`.
    UnterminatedSection,
    /// A property line without `=`.
    MissingEquals,
    /// A property line with nothing before the `=`.
    EmptyPropertyName,
    /// An indented line with no property above it in its section.
    ContinuationWithoutProperty,
    /// A sub-property line without `=`.
    SubPropertyMissingEquals,
    /// A sub-property line with nothing before the `=`.
    EmptySubPropertyName,
}

impl ParseErrorKind {
    /// The fixed, human-readable description (it contains the phrase the SDK test suite expects).
    pub fn message(self) -> &'static str {
        match self {
            ParseErrorKind::PropertyOutsideSection => {
                "Expected a profile definition (a `[name]` line) before this line"
            }
            ParseErrorKind::UnterminatedSection => {
                "Profile definition must end with ']' (only a comment may follow it)"
            }
            ParseErrorKind::MissingEquals => {
                "Expected an '=' sign defining a property (`name = value`)"
            }
            ParseErrorKind::EmptyPropertyName => "Property did not have a name (`name = value`)",
            ParseErrorKind::ContinuationWithoutProperty => {
                "Expected a property definition, found continuation (an indented line must follow a `name = value` line)"
            }
            ParseErrorKind::SubPropertyMissingEquals => {
                "Expected an '=' sign defining a sub-property (`name = value`)"
            }
            ParseErrorKind::EmptySubPropertyName => {
                "Sub-property did not have a name (`name = value`)"
            }
        }
    }
}

impl fmt::Display for ParseErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.message())
    }
}

/// A syntax error that makes the whole file unusable (the SDKs reject such a file too).
/// Displays as `line 3: Expected an '=' sign ...`; it never contains text from the file.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {kind}")]
pub struct ParseError {
    /// 1-based line number.
    pub line: usize,
    /// What is wrong.
    pub kind: ParseErrorKind,
}

/// A property value.
#[derive(Clone, PartialEq, Eq)]
pub enum Property {
    /// A plain value; continuation lines are joined with `\n`.
    Value(String),
    /// A property declared with an empty value and followed by indented `name = value` lines.
    SubProperties {
        /// The text as the SDK test suite renders it: `\n` followed by each trimmed line, joined
        /// with `\n` (e.g. `"\nname = value\nname2 = value2"`).
        raw: String,
        /// The parsed sub-properties: lower-cased names (valid identifiers only; later lines
        /// win) to values with inline comments removed.
        entries: BTreeMap<String, String>,
    },
}

impl Property {
    /// The plain value, or `None` for a property with sub-properties.
    pub fn as_value(&self) -> Option<&str> {
        match self {
            Property::Value(v) => Some(v),
            Property::SubProperties { .. } => None,
        }
    }

    /// A sub-property by name (case-insensitive), or `None` if absent or this is a plain value.
    pub fn sub(&self, name: &str) -> Option<&str> {
        match self {
            Property::Value(_) => None,
            Property::SubProperties { entries, .. } => {
                entries.get(&name.to_ascii_lowercase()).map(String::as_str)
            }
        }
    }

    /// The value as a string, the way the SDK test suite writes it (sub-properties as raw text).
    #[cfg(test)]
    pub fn raw(&self) -> &str {
        match self {
            Property::Value(v) => v,
            Property::SubProperties { raw, .. } => raw,
        }
    }
}

/// Always redacted: a property does not know its own name, so it cannot know whether it is a
/// secret. [`Section`]'s `Debug` shows the values that are not secret.
impl fmt::Debug for Property {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Property::Value(_) => f.write_str("Value([REDACTED])"),
            Property::SubProperties { entries, .. } => f
                .debug_tuple("SubProperties")
                .field(&entries.keys().collect::<Vec<_>>())
                .finish(),
        }
    }
}

/// Whether a property (by lower-case name) holds a secret and must never be printed: any name
/// containing `secret`, or ending in `_token` (`aws_session_token`, the legacy
/// `aws_security_token`).
pub fn is_secret_property(name: &str) -> bool {
    let name = name.to_ascii_lowercase();
    name.contains("secret") || name.ends_with("_token")
}

/// Formats a property for `Debug`, redacting it when its name marks it secret.
struct Shown<'a>(&'a str, &'a Property);

impl fmt::Debug for Shown<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.1 {
            _ if is_secret_property(self.0) => f.write_str("[REDACTED]"),
            Property::Value(v) => fmt::Debug::fmt(v, f),
            Property::SubProperties { entries, .. } => fmt::Debug::fmt(entries, f),
        }
    }
}

/// What a section is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SectionKind {
    /// A profile: `[default]` or `[profile NAME]` in the config file, `[NAME]` in credentials.
    Profile,
    /// `[sso-session NAME]` (config file only).
    SsoSession,
    /// `[services NAME]` (config file only).
    Services,
    /// A section the SDKs skip (a warning says why); its properties are parsed but unused.
    Ignored,
}

/// One property line (and its continuation lines) as written in the file.
#[derive(Clone, PartialEq, Eq)]
pub struct RawProperty {
    /// Lower-cased name.
    pub name: String,
    /// The value.
    pub value: Property,
    /// 1-based number of the `name = value` line.
    pub line: usize,
    /// 1-based numbers of the continuation (or sub-property) lines that belong to it.
    pub continuation_lines: Vec<usize>,
}

impl RawProperty {
    /// Every line that belongs to this property: the property line, then its continuations.
    pub fn lines(&self) -> impl Iterator<Item = usize> + '_ {
        std::iter::once(self.line).chain(self.continuation_lines.iter().copied())
    }
}

impl fmt::Debug for RawProperty {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RawProperty")
            .field("name", &self.name)
            .field("value", &Shown(&self.name, &self.value))
            .field("line", &self.line)
            .field("continuation_lines", &self.continuation_lines)
            .finish()
    }
}

/// One `[...]` section as written in the file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RawSection {
    /// 1-based number of the `[...]` line.
    pub line: usize,
    /// What the section is for.
    pub kind: SectionKind,
    /// The name without its prefix (`dev` for `[profile dev]`); for an ignored section, the
    /// trimmed text between the brackets.
    pub name: String,
    /// Properties with valid names, in file order (a repeated name appears twice; the last wins).
    pub properties: Vec<RawProperty>,
}

/// One parsed file: its sections in file order, and warnings about what the SDKs would skip.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParsedFile {
    kind: FileKind,
    sections: Vec<RawSection>,
    warnings: Vec<String>,
}

impl ParsedFile {
    /// The sections in file order, including ignored ones.
    pub fn sections(&self) -> &[RawSection] {
        &self.sections
    }
}

/// A section of the merged view: a profile, an sso-session or a services block. Two sections
/// are equal when their names and properties are: where the properties were set does not count.
#[derive(Clone, Default, Eq)]
pub struct Section {
    /// The name (`dev` for `[profile dev]`); case is kept.
    pub name: String,
    /// Properties by lower-cased name.
    pub properties: BTreeMap<String, Property>,
    /// Where each property was set (the last place, when several set it).
    pub origins: BTreeMap<String, Origin>,
}

impl PartialEq for Section {
    fn eq(&self, other: &Section) -> bool {
        self.name == other.name && self.properties == other.properties
    }
}

/// Where a property was set: which file, which line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Origin {
    /// The file.
    pub file: FileKind,
    /// 1-based line number.
    pub line: usize,
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} line {}", self.file.label(), self.line)
    }
}

impl Section {
    /// A plain property value by name (case-insensitive); `None` if absent or if it has
    /// sub-properties.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.properties.get(&key.to_ascii_lowercase())?.as_value()
    }

    /// Where property `key` was set.
    pub fn origin(&self, key: &str) -> Option<Origin> {
        self.origins.get(&key.to_ascii_lowercase()).copied()
    }

    /// A sub-property, e.g. `sub("sts", "endpoint_url")` for `sts =\n  endpoint_url = ...`.
    /// Both names are case-insensitive.
    pub fn sub(&self, key: &str, sub: &str) -> Option<&str> {
        self.properties.get(&key.to_ascii_lowercase())?.sub(sub)
    }
}

/// Shows names and values, except values of secret properties (see [`is_secret_property`]).
impl fmt::Debug for Section {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        struct Props<'a>(&'a BTreeMap<String, Property>);
        impl fmt::Debug for Props<'_> {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.debug_map()
                    .entries(self.0.iter().map(|(k, v)| (k, Shown(k, v))))
                    .finish()
            }
        }
        f.debug_struct("Section")
            .field("name", &self.name)
            .field("properties", &Props(&self.properties))
            .finish()
    }
}

/// The merged view SDKs use: config and credentials files combined.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ProfileSet {
    /// Profiles by name (case-sensitive).
    pub profiles: BTreeMap<String, Section>,
    /// `[sso-session NAME]` sections by name.
    pub sso_sessions: BTreeMap<String, Section>,
    /// `[services NAME]` sections by name.
    pub services: BTreeMap<String, Section>,
    /// Warnings from both files (sections the SDKs skip), config file first.
    pub warnings: Vec<String>,
}

impl ProfileSet {
    /// A profile by name.
    pub fn profile(&self, name: &str) -> Option<&Section> {
        self.profiles.get(name)
    }

    /// A `[services NAME]` section by name.
    #[cfg(test)]
    pub fn service(&self, name: &str) -> Option<&Section> {
        self.services.get(name)
    }
}

/// Whitespace as the profile file format defines it.
const WHITESPACE: [char; 2] = [' ', '\t'];
const COMMENT: [char; 2] = ['#', ';'];
const BOM: char = '\u{feff}';

/// One line of a text.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Line<'a> {
    /// 1-based line number.
    pub(crate) number: usize,
    /// The line without its `\n` / `\r\n` terminator (and, on line 1, without a BOM).
    pub(crate) content: &'a str,
    /// The line exactly as in the text, terminator included.
    pub(crate) full: &'a str,
}

/// Splits `text` into lines the way [`parse`] numbers them.
pub(crate) fn lines(text: &str) -> impl Iterator<Item = Line<'_>> {
    text.split_inclusive('\n').enumerate().map(|(index, full)| {
        let content = match full.strip_suffix('\n') {
            Some(line) => line.strip_suffix('\r').unwrap_or(line),
            None => full,
        };
        let content = if index == 0 {
            content.strip_prefix(BOM).unwrap_or(content)
        } else {
            content
        };
        Line {
            number: index + 1,
            content,
            full,
        }
    })
}

fn is_identifier(name: &str) -> bool {
    !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "_-/.%@:+".contains(c))
}

/// Cuts a trailing comment. In property lines a comment character only counts after whitespace.
fn strip_comment(text: &str, needs_whitespace: bool) -> &str {
    let mut after_whitespace = false;
    for (index, c) in text.char_indices() {
        if COMMENT.contains(&c) && (after_whitespace || !needs_whitespace) {
            return &text[..index];
        }
        after_whitespace = c.is_whitespace();
    }
    text
}

/// Why a `name = value` line is malformed.
enum PairError {
    NoEquals,
    NoName,
}

/// Splits a property or sub-property line into its trimmed name and value.
fn split_pair(line: &str) -> Result<(&str, &str), PairError> {
    let line = strip_comment(line.trim_matches(WHITESPACE), true);
    let (name, value) = line.split_once('=').ok_or(PairError::NoEquals)?;
    let name = name.trim_matches(WHITESPACE);
    if name.is_empty() {
        return Err(PairError::NoName);
    }
    Ok((name, value.trim_matches(WHITESPACE)))
}

/// A property being read; continuation lines may still extend it.
struct Pending {
    name: String,
    valid_name: bool,
    line: usize,
    continuation_lines: Vec<usize>,
    /// The property line's value was empty, so continuation lines are sub-properties.
    sub_mode: bool,
    text: String,
    entries: BTreeMap<String, String>,
}

struct Parser {
    kind: FileKind,
    sections: Vec<RawSection>,
    warnings: Vec<String>,
    pending: Option<Pending>,
    /// Indices of unprefixed `[default]` sections in a config file.
    bare_defaults: Vec<usize>,
    /// The config file has a `[profile default]` section.
    prefixed_default: bool,
}

impl Parser {
    fn warn(&mut self, line: usize, message: impl fmt::Display) {
        self.warnings
            .push(format!("{} line {line}: {message}", self.kind.label()));
    }

    fn flush(&mut self) {
        let Some(p) = self.pending.take() else {
            return;
        };
        if !p.valid_name {
            return;
        }
        let value = if p.sub_mode && !p.text.is_empty() {
            Property::SubProperties {
                raw: p.text,
                entries: p.entries,
            }
        } else {
            Property::Value(p.text)
        };
        if let Some(section) = self.sections.last_mut() {
            section.properties.push(RawProperty {
                name: p.name,
                value,
                line: p.line,
                continuation_lines: p.continuation_lines,
            });
        }
    }

    fn line(&mut self, line: Line<'_>) -> Result<(), ParseError> {
        let content = line.content;
        let error = |kind| ParseError {
            line: line.number,
            kind,
        };
        if content.trim_matches(WHITESPACE).is_empty() || content.starts_with(COMMENT) {
            Ok(())
        } else if content.starts_with('[') {
            self.flush();
            let header = strip_comment(content.trim_matches(WHITESPACE), false);
            let inner = header
                .trim_matches(WHITESPACE)
                .strip_prefix('[')
                .and_then(|h| h.strip_suffix(']'))
                .ok_or(error(ParseErrorKind::UnterminatedSection))?;
            self.section(line.number, inner.trim_matches(WHITESPACE));
            Ok(())
        } else if content.starts_with(WHITESPACE) {
            self.continuation(line.number, content)
        } else {
            if self.sections.is_empty() {
                return Err(error(ParseErrorKind::PropertyOutsideSection));
            }
            self.flush();
            let (name, value) = split_pair(content).map_err(|e| {
                error(match e {
                    PairError::NoEquals => ParseErrorKind::MissingEquals,
                    PairError::NoName => ParseErrorKind::EmptyPropertyName,
                })
            })?;
            let valid_name = is_identifier(name);
            let section_used = self
                .sections
                .last()
                .is_some_and(|s| s.kind != SectionKind::Ignored);
            if !valid_name && section_used {
                self.warn(
                    line.number,
                    "property ignored; its name is not a valid identifier (allowed: A-Z a-z 0-9 - _ / . % @ : +)",
                );
            }
            self.pending = Some(Pending {
                name: name.to_ascii_lowercase(),
                valid_name,
                line: line.number,
                continuation_lines: Vec::new(),
                sub_mode: value.is_empty(),
                text: value.to_owned(),
                entries: BTreeMap::new(),
            });
            Ok(())
        }
    }

    fn continuation(&mut self, number: usize, content: &str) -> Result<(), ParseError> {
        let error = |kind| ParseError { line: number, kind };
        if self.sections.is_empty() {
            return Err(error(ParseErrorKind::PropertyOutsideSection));
        }
        let Some(pending) = self.pending.as_mut() else {
            return Err(error(ParseErrorKind::ContinuationWithoutProperty));
        };
        let trimmed = content.trim_matches(WHITESPACE);
        let mut invalid_sub_name = false;
        if pending.sub_mode {
            let (name, value) = split_pair(trimmed).map_err(|e| {
                error(match e {
                    PairError::NoEquals => ParseErrorKind::SubPropertyMissingEquals,
                    PairError::NoName => ParseErrorKind::EmptySubPropertyName,
                })
            })?;
            if is_identifier(name) {
                pending
                    .entries
                    .insert(name.to_ascii_lowercase(), value.to_owned());
            } else {
                invalid_sub_name = pending.valid_name;
            }
        }
        pending.text.push('\n');
        pending.text.push_str(trimmed);
        pending.continuation_lines.push(number);
        if invalid_sub_name {
            self.warn(
                number,
                "sub-property ignored; its name is not a valid identifier (allowed: A-Z a-z 0-9 - _ / . % @ : +)",
            );
        }
        Ok(())
    }

    /// Starts a section from the trimmed text between the brackets.
    fn section(&mut self, line: usize, inner: &str) {
        let (kind, name) = match self.kind {
            FileKind::Config => self.config_section(line, inner),
            FileKind::Credentials => self.credentials_section(line, inner),
        };
        self.sections.push(RawSection {
            line,
            kind,
            name,
            properties: Vec::new(),
        });
    }

    fn config_section(&mut self, line: usize, inner: &str) -> (SectionKind, String) {
        let Some((prefix, name)) = inner.split_once(WHITESPACE) else {
            if inner == "default" {
                self.bare_defaults.push(self.sections.len());
                return (SectionKind::Profile, inner.to_owned());
            }
            self.warn(
                line,
                format_args!(
                    "section [{inner}] ignored; sections in the config file other than [default] need a prefix, e.g. [profile {inner}]"
                ),
            );
            return (SectionKind::Ignored, inner.to_owned());
        };
        let name = name.trim_matches(WHITESPACE);
        let kind = match prefix {
            "profile" => SectionKind::Profile,
            "sso-session" => SectionKind::SsoSession,
            "services" => SectionKind::Services,
            _ => {
                self.warn(
                    line,
                    format_args!(
                        "section [{inner}] ignored; `{prefix}` is not a known section type"
                    ),
                );
                return (SectionKind::Ignored, inner.to_owned());
            }
        };
        if !is_identifier(name) {
            self.warn(
                line,
                format_args!(
                    "section [{prefix} {name}] ignored; `{name}` is not a valid name (allowed: A-Z a-z 0-9 - _ / . % @ : +)"
                ),
            );
            return (SectionKind::Ignored, inner.to_owned());
        }
        if kind == SectionKind::Profile && name == "default" {
            self.prefixed_default = true;
        }
        (kind, name.to_owned())
    }

    fn credentials_section(&mut self, line: usize, inner: &str) -> (SectionKind, String) {
        if let Some((prefix, name)) = inner.split_once(WHITESPACE) {
            let name = name.trim_matches(WHITESPACE);
            if prefix == "profile" {
                self.warn(
                    line,
                    format_args!(
                        "section [{inner}] ignored; in the credentials file a profile is written [{name}], without `profile`"
                    ),
                );
            } else {
                self.warn(
                    line,
                    format_args!("section [{inner}] ignored; it belongs in the config file"),
                );
            }
            return (SectionKind::Ignored, inner.to_owned());
        }
        if !is_identifier(inner) {
            self.warn(
                line,
                format_args!(
                    "section [{inner}] ignored; `{inner}` is not a valid profile name (allowed: A-Z a-z 0-9 - _ / . % @ : +)"
                ),
            );
            return (SectionKind::Ignored, inner.to_owned());
        }
        (SectionKind::Profile, inner.to_owned())
    }

    fn finish(mut self) -> ParsedFile {
        self.flush();
        if self.prefixed_default {
            for index in std::mem::take(&mut self.bare_defaults) {
                let line = self.sections[index].line;
                self.sections[index].kind = SectionKind::Ignored;
                self.warn(
                    line,
                    "section [default] ignored; [profile default] is also present and takes precedence",
                );
            }
        }
        ParsedFile {
            kind: self.kind,
            sections: self.sections,
            warnings: self.warnings,
        }
    }
}

/// Parses one shared config or credentials file.
pub fn parse(text: &str, kind: FileKind) -> Result<ParsedFile, ParseError> {
    let mut parser = Parser {
        kind,
        sections: Vec::new(),
        warnings: Vec::new(),
        pending: None,
        bare_defaults: Vec::new(),
        prefixed_default: false,
    };
    for line in lines(text) {
        parser.line(line)?;
    }
    Ok(parser.finish())
}

/// Combines the two files into the view the SDKs use. Sections were classified when each file was
/// parsed (with its own [`FileKind`]); here the argument position only decides precedence: a
/// property from `credentials` replaces the same property of the same profile from `config`.
pub fn merge(config: Option<ParsedFile>, credentials: Option<ParsedFile>) -> ProfileSet {
    let mut set = ProfileSet::default();
    for file in [config, credentials].into_iter().flatten() {
        set.warnings.extend(file.warnings);
        let kind = file.kind;
        for section in file.sections {
            let target = match section.kind {
                SectionKind::Profile => &mut set.profiles,
                SectionKind::SsoSession => &mut set.sso_sessions,
                SectionKind::Services => &mut set.services,
                SectionKind::Ignored => continue,
            };
            let merged = target
                .entry(section.name.clone())
                .or_insert_with(|| Section {
                    name: section.name,
                    ..Section::default()
                });
            for property in section.properties {
                merged.origins.insert(
                    property.name.clone(),
                    Origin {
                        file: kind,
                        line: property.line,
                    },
                );
                merged.properties.insert(property.name, property.value);
            }
        }
    }
    set
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::Value;

    /// The current suite from smithy-rs aws-config (see tests/data/profile/SOURCE.md).
    const PRIMARY: &str = include_str!("../../tests/data/profile/profile-parser-tests.json");
    /// The older smithy-rs aws-types copy of the suite.
    const LEGACY: &str =
        include_str!("../../tests/data/profile/legacy-aws-types/profile-parser-tests.json");
    /// The amplify-flutter copy of the suite.
    const AMPLIFY: &str = include_str!("../../tests/data/profile/parser-tests.json");

    type Sections = BTreeMap<String, BTreeMap<String, String>>;

    fn render(sections: &BTreeMap<String, Section>) -> Sections {
        sections
            .iter()
            .map(|(name, section)| {
                let props = section
                    .properties
                    .iter()
                    .map(|(k, v)| (k.clone(), v.raw().to_owned()))
                    .collect();
                (name.clone(), props)
            })
            .collect()
    }

    fn expected_sections(value: &Value) -> Sections {
        serde_json::from_value(value.clone()).expect("sections are maps of strings")
    }

    /// Runs one suite case; `Err` describes the mismatch.
    fn run_case(case: &Value) -> Result<(), String> {
        let input = &case["input"];
        let mut files = Vec::new();
        for (key, kind) in [
            ("configFile", FileKind::Config),
            ("credentialsFile", FileKind::Credentials),
        ] {
            if let Some(text) = input.get(key) {
                let text = text.as_str().expect("file contents are strings");
                files.push((kind, parse(text, kind)));
            }
        }
        let output = &case["output"];
        if let Some(wanted) = output.get("errorContaining") {
            let wanted = wanted.as_str().expect("errorContaining is a string");
            return match files.iter().find_map(|(_, r)| r.as_ref().err()) {
                Some(e) if e.to_string().contains(wanted) => Ok(()),
                Some(e) => Err(format!("error `{e}` does not contain `{wanted}`")),
                None => Err(format!(
                    "parsed, but expected an error containing `{wanted}`"
                )),
            };
        }
        let mut config = None;
        let mut credentials = None;
        for (kind, result) in files {
            let parsed = result.map_err(|e| format!("unexpected error: {e}"))?;
            match kind {
                FileKind::Config => config = Some(parsed),
                FileKind::Credentials => credentials = Some(parsed),
            }
        }
        let set = merge(config, credentials);
        // Current smithy-rs wraps the result in `config`; older copies do not.
        let expected = output.get("config").unwrap_or(output);
        let want_profiles = expected_sections(&expected["profiles"]);
        let got_profiles = render(&set.profiles);
        if got_profiles != want_profiles {
            return Err(format!(
                "profiles: got {got_profiles:?}, want {want_profiles:?}"
            ));
        }
        let want_sessions = expected
            .get("sso_sessions")
            .map(expected_sections)
            .unwrap_or_default();
        let got_sessions = render(&set.sso_sessions);
        if got_sessions != want_sessions {
            return Err(format!(
                "sso_sessions: got {got_sessions:?}, want {want_sessions:?}"
            ));
        }
        Ok(())
    }

    /// Runs a suite; returns the number of cases and the names of failing ones with reasons.
    fn run_suite(json: &str) -> (usize, Vec<(String, String)>) {
        let suite: Value = serde_json::from_str(json).expect("suite is JSON");
        let cases = suite["tests"].as_array().expect("tests array");
        let failures = cases
            .iter()
            .filter_map(|case| {
                run_case(case).err().map(|why| {
                    let name = case["name"].as_str().unwrap_or("?").to_owned();
                    (name, why)
                })
            })
            .collect();
        (cases.len(), failures)
    }

    #[test]
    fn primary_suite_passes_completely() {
        let (count, failures) = run_suite(PRIMARY);
        assert!(failures.is_empty(), "{failures:#?}");
        assert_eq!(count, 64, "all cases of the primary suite ran");
    }

    /// The one case where the older suites disagree with the primary one: they expect property
    /// names to keep their case; the primary suite (and this parser) lower-cases them.
    const CONFLICTS: [&str; 1] = ["All valid property name characters are supported."];

    fn assert_only_conflicts(json: &str, cases: usize) {
        let (count, failures) = run_suite(json);
        assert_eq!(count, cases);
        let names: Vec<&str> = failures.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, CONFLICTS, "{failures:#?}");
    }

    #[test]
    fn legacy_suite_passes_except_conflicts() {
        assert_only_conflicts(LEGACY, 55);
    }

    #[test]
    fn amplify_suite_passes_except_conflicts() {
        assert_only_conflicts(AMPLIFY, 60);
    }

    fn config(text: &str) -> ProfileSet {
        merge(Some(parse(text, FileKind::Config).expect("parses")), None)
    }

    #[test]
    fn services_sub_properties() {
        let set = config(
            "[profile dev]\nservices = local\n[services local]\nsts =\n  endpoint_url = http://127.0.0.1:5000 # moto\n  Region = us-east-1\n",
        );
        let services = set.service("local").expect("services section");
        assert_eq!(
            services.sub("sts", "endpoint_url"),
            Some("http://127.0.0.1:5000")
        );
        assert_eq!(services.sub("STS", "REGION"), Some("us-east-1"));
        assert_eq!(
            services.get("sts"),
            None,
            "sub-properties are not a plain value"
        );
        assert_eq!(
            services.properties["sts"].raw(),
            "\nendpoint_url = http://127.0.0.1:5000 # moto\nRegion = us-east-1"
        );
        assert_eq!(
            set.profile("dev").and_then(|p| p.get("SERVICES")),
            Some("local")
        );
    }

    #[test]
    fn section_rules_and_warnings() {
        let set = config(
            "[foo]\na = 1\n[profile bad!name]\n[unknown x]\n[profile ok]\nin valid = 2\n[default]\n[profile default]\n",
        );
        assert_eq!(set.profiles.keys().collect::<Vec<_>>(), ["default", "ok"]);
        assert!(set.profiles["ok"].properties.is_empty());
        let w = set.warnings.join("\n");
        for needle in [
            "config file line 1: section [foo] ignored",
            "line 3: section [profile bad!name] ignored",
            "line 4: section [unknown x] ignored",
            "line 6: property ignored",
            "line 7: section [default] ignored; [profile default]",
        ] {
            assert!(w.contains(needle), "{needle:?} not in {w}");
        }
        assert!(!w.contains("in valid"), "property names are not echoed");

        let creds = parse("[profile a]\n[sso-session b]\n[c]\n", FileKind::Credentials).unwrap();
        let set = merge(None, Some(creds));
        assert_eq!(set.profiles.keys().collect::<Vec<_>>(), ["c"]);
        assert!(set.sso_sessions.is_empty());
        assert_eq!(set.warnings.len(), 2);
        assert!(set.warnings[0].starts_with("credentials file line 1:"));
    }

    #[test]
    fn credentials_win_per_property() {
        let c = parse("[profile a]\nregion = eu-west-1\nx = 1\n", FileKind::Config).unwrap();
        let k = parse("[a]\nx = 2\n[b]\n", FileKind::Credentials).unwrap();
        let set = merge(Some(c), Some(k));
        assert_eq!(set.profiles["a"].get("region"), Some("eu-west-1"));
        assert_eq!(set.profiles["a"].get("X"), Some("2"));
        assert!(set.profiles.contains_key("b"));
    }

    #[test]
    fn errors_name_the_line_and_never_the_text() {
        let secret = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY";
        for (text, line, kind) in [
            (
                format!("[a]\nx = 1\n{secret}\n"),
                3,
                ParseErrorKind::MissingEquals,
            ),
            (
                format!("{secret} = 1\n"),
                1,
                ParseErrorKind::PropertyOutsideSection,
            ),
            (
                format!("[a]\n  {secret}\n"),
                2,
                ParseErrorKind::ContinuationWithoutProperty,
            ),
            (
                format!("[a]\ns3 =\n  {secret}\n"),
                3,
                ParseErrorKind::SubPropertyMissingEquals,
            ),
            (
                format!("[a]\ns3 =\n  = {secret}\n"),
                3,
                ParseErrorKind::EmptySubPropertyName,
            ),
            (
                format!("[a]\n= {secret}\n"),
                2,
                ParseErrorKind::EmptyPropertyName,
            ),
            (
                format!("[{secret}\n"),
                1,
                ParseErrorKind::UnterminatedSection,
            ),
            (
                format!("[a] {secret}\n"),
                1,
                ParseErrorKind::UnterminatedSection,
            ),
        ] {
            let err = parse(&text, FileKind::Credentials).unwrap_err();
            assert_eq!(err, ParseError { line, kind }, "{text:?}");
            let shown = format!("{err} {err:?}");
            assert!(shown.starts_with(&format!("line {line}: ")), "{shown}");
            assert!(!shown.contains("wJalr"), "{shown}");
        }
    }

    #[test]
    fn debug_redacts_secrets() {
        let secret = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY";
        let text = format!(
            "[a]\naws_access_key_id = AKIDEXAMPLE\nAWS_Secret_Access_Key = {secret}\naws_session_token = {secret}\naws_security_token = {secret}\nregion = us-east-1\n"
        );
        let parsed = parse(&text, FileKind::Credentials).unwrap();
        let set = merge(None, Some(parsed.clone()));
        let shown = format!(
            "{parsed:?} {set:?} {:?} {:#?}",
            set.profiles["a"].properties["aws_secret_access_key"], set
        );
        assert!(!shown.contains("wJalr"), "{shown}");
        assert!(shown.contains("us-east-1") && shown.contains("AKIDEXAMPLE"));
    }

    #[test]
    fn line_handling() {
        // BOM, CRLF, bare trailing CR kept in the value (not a line ending), tabs.
        let set = config("\u{feff}[profile a]\r\nx\t=\ty\r\n\r\n  more\r\nz = 1\r");
        let a = &set.profiles["a"];
        assert_eq!(a.get("x"), Some("y\nmore"));
        assert_eq!(a.get("z"), Some("1\r"));
        // An indented comment is a continuation line, as in the SDKs.
        let set = config("[profile a]\nx = 1\n  # not a comment\n");
        assert_eq!(set.profiles["a"].get("x"), Some("1\n# not a comment"));
        // Empty value without continuation stays a plain empty value.
        let set = config("[profile a]\ns3 =\n\n[profile b]");
        assert_eq!(set.profiles["a"].get("s3"), Some(""));
        // A comment on the header line needs no whitespace; `]` in a comment does not count.
        assert!(parse("[profile a]#]", FileKind::Config).is_ok());
        assert_eq!(
            parse("[profile a#]", FileKind::Config).unwrap_err().kind,
            ParseErrorKind::UnterminatedSection
        );
    }

    #[test]
    fn raw_sections_track_lines() {
        let parsed = parse(
            "[a]\nk = v\n# c\n  cont\n\n  cont2\nj = 1\n[a]\nk = w\n",
            FileKind::Credentials,
        )
        .unwrap();
        let s = parsed.sections();
        assert_eq!(s.len(), 2);
        assert_eq!(s[0].properties[0].lines().collect::<Vec<_>>(), [2, 4, 6]);
        assert_eq!(s[0].properties[1].lines().collect::<Vec<_>>(), [7]);
        assert_eq!((s[1].line, s[1].properties[0].line), (8, 9));
    }

    /// Pieces that make up interesting profile files.
    fn fragment() -> impl Strategy<Value = &'static str> {
        prop::sample::select(vec![
            "[",
            "]",
            "[profile ",
            "[default]",
            "[sso-session ",
            "[services ",
            "profile",
            "a",
            "B",
            "=",
            " = ",
            "#",
            ";",
            " ",
            "\t",
            "\n",
            "\r\n",
            "\r",
            "  ",
            "aws_access_key_id",
            "AWS_Secret_Access_Key",
            "aws_session_token",
            "x",
            "\u{feff}",
            "é",
            "!",
            "s3 =\n",
        ])
    }

    proptest! {
        #[test]
        fn arbitrary_text_never_panics(text in ".*") {
            crate::profile::fuzz_files(text.as_bytes());
        }

        #[test]
        fn arbitrary_bytes_never_panic(data in prop::collection::vec(any::<u8>(), 0..200)) {
            crate::profile::fuzz_files(&data);
        }

        #[test]
        fn structured_text_never_panics(parts in prop::collection::vec(fragment(), 0..40)) {
            crate::profile::fuzz_files(parts.concat().as_bytes());
        }
    }

    /// A generated well-formed config file and the merged view it must produce.
    #[derive(Debug, Clone)]
    struct Model {
        text: String,
        expected: Sections,
    }

    fn identifier() -> impl Strategy<Value = String> {
        "[A-Za-z0-9_./%@:+-]{1,8}"
    }

    /// A value: no leading/trailing whitespace, no comment character after whitespace.
    fn value() -> impl Strategy<Value = String> {
        prop_oneof![
            Just(String::new()),
            "[A-Za-z0-9=/+:.-][A-Za-z0-9=/+:.#;-]{0,10}"
        ]
    }

    #[derive(Debug, Clone)]
    enum Item {
        Prop(String, String),
        Subs(String, Vec<(String, String)>),
        Comment(bool),
        Blank,
    }

    fn item() -> impl Strategy<Value = Item> {
        prop_oneof![
            4 => (identifier(), value()).prop_map(|(k, v)| Item::Prop(k, v)),
            1 => (identifier(), prop::collection::vec((identifier(), value()), 1..3))
                .prop_map(|(k, s)| Item::Subs(k, s)),
            1 => any::<bool>().prop_map(Item::Comment),
            1 => Just(Item::Blank),
        ]
    }

    fn model() -> impl Strategy<Value = Model> {
        let section = (
            prop::sample::select(vec!["dev", "Prod", "default", "a.b@c"]),
            prop::collection::vec(item(), 0..6),
            any::<bool>(),
        );
        (
            prop::collection::vec(section, 0..6),
            any::<bool>(),
            any::<bool>(),
        )
            .prop_map(|(sections, crlf, final_newline)| {
                let eol = if crlf { "\r\n" } else { "\n" };
                let mut lines = Vec::new();
                let mut expected = Sections::new();
                for (name, items, comment_on_header) in sections {
                    let header_comment = if comment_on_header { " ; note" } else { "" };
                    lines.push(format!("[profile  {name} ]{header_comment}"));
                    let props = expected.entry(name.to_owned()).or_default();
                    for item in items {
                        match item {
                            Item::Prop(k, v) => {
                                lines.push(format!("{k} ={v} # c"));
                                props.insert(k.to_ascii_lowercase(), v);
                            }
                            Item::Subs(k, subs) => {
                                lines.push(format!("{k}\t="));
                                let mut raw = String::new();
                                for (sk, sv) in subs {
                                    let line = format!("{sk} = {sv}");
                                    let line = line.trim_end();
                                    lines.push(format!("  {line}"));
                                    raw.push('\n');
                                    raw.push_str(line);
                                }
                                props.insert(k.to_ascii_lowercase(), raw);
                            }
                            Item::Comment(hash) => {
                                lines.push(if hash { "# x = y" } else { ";[z]" }.to_owned())
                            }
                            Item::Blank => lines.push(" \t".to_owned()),
                        }
                    }
                }
                let mut text = lines.join(eol);
                if final_newline && !text.is_empty() {
                    text.push_str(eol);
                }
                Model { text, expected }
            })
    }

    proptest! {
        #[test]
        fn generated_files_parse_to_their_model(m in model()) {
            let parsed = parse(&m.text, FileKind::Config).expect("well-formed");
            let set = merge(Some(parsed), None);
            prop_assert_eq!(render(&set.profiles), m.expected);
            prop_assert!(set.warnings.is_empty(), "{:?}", set.warnings);
        }
    }
}
