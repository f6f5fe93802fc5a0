//! Key management: `add`, `import`, `list`, `remove`. Secrets are read without echo (or from
//! stdin / the environment), kept in `SecretString`, checked with STS, and written only to the
//! keyring. Nothing here prints a secret.

use std::io::{BufRead, IsTerminal, Write};
use std::process::ExitCode;

use anyhow::{Context as _, bail};
use secrecy::{ExposeSecret, SecretString};

use super::open_keystore;
use crate::context::Context;
use crate::creds::LongTermKey;
use crate::profile::edit;
use crate::profile::file::ProfileSet;
use crate::profile::resolve::{self, StsTarget};
use crate::sts::{ClientOptions, StsClient};

/// `credvend add`.
#[derive(Debug, clap::Args)]
pub struct AddArgs {
    /// Profile name (as in the AWS config)
    profile: String,
    /// The access key id (prompted for when absent)
    #[arg(long, value_name = "ID", conflicts_with = "from_env")]
    access_key_id: Option<String>,
    /// Read the secret access key from the first line of stdin
    #[arg(long, requires = "access_key_id", conflicts_with = "from_env")]
    secret_stdin: bool,
    /// Take the key from AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY
    #[arg(long)]
    from_env: bool,
    /// Store without checking the key with STS GetCallerIdentity
    #[arg(long)]
    no_verify: bool,
    /// Replace keys already stored for the profile
    #[arg(long)]
    force: bool,
}

/// `credvend import`.
#[derive(Debug, clap::Args)]
pub struct ImportArgs {
    /// Profiles to import (default: every profile with keys in the file)
    profiles: Vec<String>,
    /// Delete the imported keys from the credentials file afterwards
    #[arg(long)]
    remove: bool,
    /// Replace keys already stored in the keyring for those profiles
    #[arg(long)]
    force: bool,
}

/// `credvend list`.
#[derive(Debug, clap::Args)]
pub struct ListArgs {
    /// Machine-readable output
    #[arg(long)]
    json: bool,
}

/// `credvend remove`.
#[derive(Debug, clap::Args)]
pub struct RemoveArgs {
    /// Profile whose keys (or IAM Identity Center sign-in) to delete
    profile: String,
}

fn prompt_line(label: &str) -> anyhow::Result<String> {
    eprint!("{label}");
    std::io::stderr().flush().ok();
    let mut line = String::new();
    std::io::stdin().lock().read_line(&mut line)?;
    Ok(line.trim().to_owned())
}

fn check_key(key: &LongTermKey) -> anyhow::Result<()> {
    let id = &key.access_key_id;
    if id.is_empty() || id.chars().any(|c| c.is_whitespace()) {
        bail!("the access key id is empty or contains spaces");
    }
    if id.starts_with("ASIA") {
        bail!(
            "{id} is a temporary access key (ASIA…); credvend stores long-term keys (AKIA…) and mints temporary ones itself"
        );
    }
    let secret = key.secret_access_key.expose_secret();
    if secret.is_empty() || secret.chars().any(|c| c.is_whitespace()) {
        bail!("the secret access key is empty or contains spaces");
    }
    Ok(())
}

fn read_key(args: &AddArgs) -> anyhow::Result<LongTermKey> {
    if args.from_env {
        let id = std::env::var("AWS_ACCESS_KEY_ID")
            .ok()
            .filter(|v| !v.is_empty())
            .context("--from-env: AWS_ACCESS_KEY_ID is not set")?;
        let secret = std::env::var("AWS_SECRET_ACCESS_KEY")
            .ok()
            .filter(|v| !v.is_empty())
            .context("--from-env: AWS_SECRET_ACCESS_KEY is not set")?;
        return Ok(LongTermKey {
            access_key_id: id,
            secret_access_key: SecretString::from(secret),
        });
    }
    let interactive = std::io::stdin().is_terminal();
    let id = match &args.access_key_id {
        Some(id) => id.trim().to_owned(),
        None if interactive => prompt_line("Access key ID: ")?,
        None => {
            bail!("no terminal to prompt on: pass --access-key-id ID --secret-stdin, or --from-env")
        }
    };
    let secret = if args.secret_stdin {
        let mut line = String::new();
        std::io::stdin()
            .lock()
            .read_line(&mut line)
            .context("reading the secret from stdin")?;
        SecretString::from(line.trim_end_matches(['\n', '\r']).to_owned())
    } else if interactive {
        SecretString::from(
            rpassword::prompt_password("Secret access key (not shown): ")?
                .trim()
                .to_owned(),
        )
    } else {
        bail!("no terminal to prompt on: pass --secret-stdin and write the secret to stdin");
    };
    Ok(LongTermKey {
        access_key_id: id,
        secret_access_key: secret,
    })
}

/// Where to check a key of `profile`: the STS endpoint a call signed with it would use, from
/// the profile's own settings (region, endpoint_url, `[services]`, ca_bundle, environment).
pub(super) fn verify_target(
    ctx: &Context,
    set: &ProfileSet,
    profile: &str,
) -> anyhow::Result<StsTarget> {
    if let Some(target) = resolve::key_target(set, profile, &ctx.env) {
        return Ok(target?);
    }
    let mut set = ProfileSet::default();
    set.profiles.insert(
        profile.to_owned(),
        crate::profile::file::Section {
            name: profile.to_owned(),
            ..Default::default()
        },
    );
    Ok(resolve::key_target(&set, profile, &ctx.env).expect("the profile was just added")?)
}

fn profiles(ctx: &Context) -> anyhow::Result<ProfileSet> {
    ctx.load_profiles().map_err(anyhow::Error::msg)
}

/// `credvend add PROFILE`.
pub async fn add(ctx: &Context, args: AddArgs) -> anyhow::Result<ExitCode> {
    let key = read_key(&args)?;
    check_key(&key)?;
    let store = open_keystore(ctx, true).await?;
    if !args.force && store.has_key(&args.profile).await? {
        bail!(
            "profile `{}` already has keys in the {}; pass --force to replace them",
            args.profile,
            store.backend()
        );
    }
    if !args.no_verify {
        verify(ctx, &args.profile, &key).await?;
    }
    store.put_key(&args.profile, &key).await?;
    eprintln!(
        "credvend: stored {} for profile `{}` in the {}",
        key.access_key_id,
        args.profile,
        store.backend()
    );
    if let Some(note) = store.backend().persistence_note() {
        eprintln!("credvend: {note}");
    }
    tell_daemon(ctx, &args.profile, false).await;
    Ok(ExitCode::SUCCESS)
}

/// Checks `key` with STS GetCallerIdentity where calls signed with it go; the error says
/// whether STS could not be reached or refused the key.
async fn verify(ctx: &Context, profile: &str, key: &LongTermKey) -> anyhow::Result<()> {
    let set = profiles(ctx)?;
    if !set.profiles.contains_key(profile) {
        eprintln!(
            "credvend: profile `{profile}` is not in the AWS config ({}); checking the key against the default STS endpoint \
             (add a [profile {profile}] section with region / endpoint_url first to check it elsewhere)",
            ctx.aws_config.display()
        );
    }
    let target = verify_target(ctx, &set, profile)?;
    let client = StsClient::new(ClientOptions {
        ca_bundle: target.ca_bundle.clone(),
        ..ClientOptions::default()
    })?;
    let endpoint = &target.endpoint;
    match client.caller_identity(endpoint, key.signing_key()).await {
        Ok(id) => {
            eprintln!("credvend: verified {} (account {})", id.arn, id.account);
            Ok(())
        }
        Err(e @ crate::sts::StsError::Service(_)) if e.code() == Some("SignatureDoesNotMatch") => {
            bail!(
                "the key was not stored: STS at {endpoint} refused it ({e}). {}; or pass --no-verify to store it unchecked",
                endpoint.signature_diagnosis()
            )
        }
        Err(e @ crate::sts::StsError::Service(_)) => bail!(
            "the key was not stored: STS at {endpoint} refused it ({e}); check the key id and secret, or pass --no-verify to store it unchecked"
        ),
        Err(e) => bail!(
            "the key was not stored: could not check it, STS at {endpoint} did not answer ({e}); check the network, endpoint_url and ca_bundle, or pass --no-verify to store it unchecked"
        ),
    }
}

/// `credvend import [PROFILE...]`.
pub async fn import(ctx: &Context, args: ImportArgs) -> anyhow::Result<ExitCode> {
    // Through any symlink (dotfile managers link ~/.aws/credentials): the rewrite below replaces
    // a file, and replacing the link would leave the keys in its target.
    let path = ctx.aws_credentials.clone();
    let path = std::fs::canonicalize(&path).unwrap_or(path);
    let text = std::fs::read_to_string(&path)
        .with_context(|| format!("cannot read the credentials file {}", path.display()))?;
    let found = edit::find_keys(&text, &args.profiles)
        .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    for wanted in &args.profiles {
        if !found.iter().any(|f| &f.profile == wanted) {
            bail!(
                "{} has no aws_access_key_id / aws_secret_access_key for profile `{wanted}`",
                path.display()
            );
        }
    }
    let store = open_keystore(ctx, true).await?;
    let mut imported = Vec::new();
    for f in &found {
        if f.has_session_token {
            eprintln!(
                "credvend: skipped `{}`: it holds temporary credentials (aws_session_token), not a long-term key",
                f.profile
            );
            continue;
        }
        let key = LongTermKey {
            access_key_id: f.access_key_id.clone(),
            secret_access_key: f.secret_access_key.clone(),
        };
        if let Err(e) = check_key(&key) {
            eprintln!("credvend: skipped `{}`: {e}", f.profile);
            continue;
        }
        match store.get_key(&f.profile).await {
            Ok(existing)
                if existing.access_key_id == key.access_key_id
                    && existing.secret_access_key.expose_secret()
                        == key.secret_access_key.expose_secret() => {}
            Ok(_) if !args.force => bail!(
                "profile `{}` already has different keys in the {}; pass --force to replace them",
                f.profile,
                store.backend()
            ),
            _ => store.put_key(&f.profile, &key).await?,
        }
        // Read back before the file loses its copy.
        let back = store.get_key(&f.profile).await?;
        if back.secret_access_key.expose_secret() != key.secret_access_key.expose_secret() {
            bail!(
                "the keyring did not return the key just stored for `{}`; the credentials file was not changed",
                f.profile
            );
        }
        eprintln!(
            "credvend: imported {} for profile `{}` into the {}",
            key.access_key_id,
            f.profile,
            store.backend()
        );
        imported.push(f.profile.clone());
    }
    if imported.is_empty() {
        bail!("no long-term keys to import in {}", path.display());
    }
    for profile in &imported {
        tell_daemon(ctx, profile, false).await;
    }
    if args.remove {
        // The backup keeps every line but blanks the moved secrets: the keys now live only in
        // the keyring, and a plaintext copy next to the original would defeat the import.
        let blanked = edit::blank_secrets(&text, &imported)
            .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
        let backup = path.with_file_name(format!(
            "{}.credvend-backup",
            path.file_name()
                .and_then(|n| n.to_str())
                .unwrap_or("credentials")
        ));
        crate::paths::write_private_file(&backup, blanked.as_bytes())
            .with_context(|| format!("cannot write the backup {}", backup.display()))?;
        let new = edit::remove_keys(&text, &imported)
            .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
        crate::paths::write_private_file(&path, new.as_bytes())
            .with_context(|| format!("cannot rewrite {}", path.display()))?;
        eprintln!(
            "credvend: removed the imported keys from {} (backup with secrets blanked: {})",
            path.display(),
            backup.display()
        );
    } else {
        eprintln!(
            "credvend: {} still holds the keys; run `credvend import --remove` to delete them from it",
            path.display()
        );
    }
    if let Some(note) = store.backend().persistence_note() {
        eprintln!("credvend: {note}");
    }
    Ok(ExitCode::SUCCESS)
}

/// `credvend list`.
pub async fn list(ctx: &Context, args: ListArgs) -> anyhow::Result<ExitCode> {
    let set = profiles(ctx)?;
    let store = open_keystore(ctx, false).await;
    let (stored, store_error): (Vec<String>, Option<String>) = match &store {
        Ok(s) => match s.list_profiles().await {
            Ok(v) => (v, None),
            Err(e) => (Vec::new(), Some(e.to_string())),
        },
        Err(e) => (Vec::new(), Some(format!("{e:#}"))),
    };
    let env = &ctx.env;
    let mut names: Vec<String> = set.profiles.keys().cloned().collect();
    names.extend(stored.iter().cloned());
    names.sort();
    names.dedup();
    let rows: Vec<serde_json::Value> = names
        .iter()
        .map(|name| {
            let in_config = set.profiles.contains_key(name);
            let source = if in_config {
                match resolve::resolve(&set, name, env, &resolve::read_file) {
                    Ok(c) => serde_json::json!({ "source": c.describe() }),
                    Err(e) => serde_json::json!({ "error": e.message }),
                }
            } else {
                serde_json::json!({})
            };
            let warnings: Vec<String> = crate::profile::check::check_profile(&set, name)
                .iter()
                .map(ToString::to_string)
                .collect();
            let mut row = serde_json::json!({
                "profile": name,
                "in_config": in_config,
                "has_keys": stored.contains(name),
                "warnings": warnings,
            });
            if let serde_json::Value::Object(extra) = source {
                row.as_object_mut().expect("object").extend(extra);
            }
            row
        })
        .collect();
    let backend = store.as_ref().ok().map(|s| s.backend().to_string());
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({
                "keystore": backend,
                "keystore_error": store_error,
                "profiles": rows,
            }))?
        );
        return Ok(ExitCode::SUCCESS);
    }
    if let Some(e) = &store_error {
        eprintln!("credvend: cannot read the keyring: {e}");
    }
    if rows.is_empty() {
        println!(
            "no profiles: the AWS config is empty and the keyring holds no keys (add one with `credvend add NAME`)"
        );
        return Ok(ExitCode::SUCCESS);
    }
    let width = names.iter().map(|n| n.len()).max().unwrap_or(7).max(7);
    println!("{:width$}  {:4}  SOURCE", "PROFILE", "KEYS");
    for row in &rows {
        let keys = if row["has_keys"] == true { "yes" } else { "-" };
        let source = row["source"]
            .as_str()
            .map(str::to_owned)
            .or_else(|| row["error"].as_str().map(|e| format!("error: {e}")))
            .unwrap_or_else(|| "(not in the AWS config)".into());
        let line = format!(
            "{:width$}  {:4}  {source}",
            row["profile"].as_str().unwrap_or_default(),
            keys
        );
        println!("{}", super::printable(&line));
        for w in row["warnings"].as_array().into_iter().flatten() {
            let w = format!(
                "{:width$}  {:4}  warning: {}",
                "",
                "",
                w.as_str().unwrap_or("")
            );
            println!("{}", super::printable(&w));
        }
    }
    if let Some(b) = backend {
        println!("\nkeys are read from the {b}");
    }
    Ok(ExitCode::SUCCESS)
}

/// `credvend remove PROFILE`.
pub async fn remove(ctx: &Context, args: RemoveArgs) -> anyhow::Result<ExitCode> {
    let store = open_keystore(ctx, true).await?;
    // An unreadable rotation record is removed too: that is what `remove` is for.
    let rotation = store.get_rotation(&args.profile).await.ok().flatten();
    let had_rotation = store.delete_rotation(&args.profile).await?;
    let had_key = store.delete_key(&args.profile).await?;
    let had_session = store.delete_session(&args.profile).await?;
    if let Some(pending) = rotation.and_then(|r| r.new_key) {
        eprintln!(
            "credvend: removed an unfinished key rotation of `{}`; its new key {} may still exist in IAM",
            args.profile, pending.access_key_id
        );
    }
    if let Some(session) = super::sso::remove_sign_in(ctx, &store, &args.profile).await? {
        eprintln!(
            "credvend: removed the IAM Identity Center sign-in of {session} (every profile of it needs `credvend login` again)"
        );
        if !had_key && !had_session && !had_rotation {
            return Ok(ExitCode::SUCCESS);
        }
    }
    if !had_key && !had_session && !had_rotation {
        bail!(
            "nothing is stored for profile `{}` in the {}",
            args.profile,
            store.backend()
        );
    }
    eprintln!(
        "credvend: removed the stored keys of `{}` from the {}",
        args.profile,
        store.backend()
    );
    tell_daemon(ctx, &args.profile, true).await;
    Ok(ExitCode::SUCCESS)
}

/// Tells a running daemon that the keys stored for `profile` changed, so that what it serves
/// from them follows at once (removed keys stop being used; new ones are used). Without a
/// daemon there is nothing to tell.
pub(crate) async fn tell_daemon(ctx: &Context, profile: &str, removed: bool) {
    use crate::control::client::ClientError;
    use crate::control::proto::{Reply, Request};
    let req = Request::KeysChanged {
        profile: profile.to_owned(),
        removed,
    };
    match crate::control::client::call(&ctx.state_dir, &req).await {
        Ok(Reply::Affected { profiles }) if !profiles.is_empty() => {
            let what = if removed {
                "stops serving"
            } else {
                "mints new credentials for"
            };
            eprintln!("credvend: the daemon {what} {}", profiles.join(", "));
        }
        Ok(_) | Err(ClientError::NotRunning(_)) => {}
        Err(e) => eprintln!("credvend: warning: could not tell the daemon: {e}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn temporary_and_malformed_keys_are_refused() {
        let k = |id: &str, s: &str| LongTermKey {
            access_key_id: id.into(),
            secret_access_key: SecretString::from(s.to_owned()),
        };
        assert!(check_key(&k("AKIAIOSFODNN7EXAMPLE", "abc")).is_ok());
        assert!(
            check_key(&k("ASIAIOSFODNN7EXAMPLE", "abc"))
                .unwrap_err()
                .to_string()
                .contains("temporary")
        );
        assert!(check_key(&k("", "abc")).is_err());
        assert!(check_key(&k("AKIA", "a b")).is_err());
    }
}
