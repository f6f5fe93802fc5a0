//! Reading the AWS shared config and credentials files from disk and merging them (missing files
//! are empty), with one message naming the file when one cannot be read or parsed.

use std::path::Path;

use super::file::{FileKind, ParsedFile, ProfileSet, merge, parse};

/// Reads and merges the AWS config and credentials files. Parser warnings (sections the SDKs
/// skip) are in the result's `warnings`.
pub(crate) fn load_profiles(config: &Path, credentials: &Path) -> Result<ProfileSet, String> {
    Ok(merge(
        read(config, FileKind::Config)?,
        read(credentials, FileKind::Credentials)?,
    ))
}

fn read(path: &Path, kind: FileKind) -> Result<Option<ParsedFile>, String> {
    match std::fs::read_to_string(path) {
        Ok(text) => parse(&text, kind)
            .map(Some)
            .map_err(|e| format!("{}: {e}", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(format!("cannot read {}: {e}", path.display())),
    }
}
