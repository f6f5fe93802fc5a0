//! `credvend rotate PROFILE`: replaces the long-term key stored for PROFILE with a new key of the
//! same IAM user and deletes the old key in IAM, so that a key is never older than the last
//! rotation and never exists outside the keyring.
//!
//! # Steps
//!
//! 1. `GetCallerIdentity` with the stored key: it works, and it names the IAM user.
//! 2. `ListAccessKeys`: the user must have no key besides the stored one. IAM allows two and a
//!    rotation needs the second slot; a second key is the user's own and is never touched (the
//!    rotation stops and names it).
//! 3. keyring: the *rotation record* of the profile (IAM user, old key id, start time T, the key
//!    ids the user has now).
//! 4. `CreateAccessKey`, never retried once it may have run ([`IamClient::create_access_key`]).
//! 5. keyring: the new key into the record, as the *pending* key.
//! 6. `GetCallerIdentity` with the new key, retried with backoff for up to
//!    [`PROPAGATION_WAIT`] while STS answers `InvalidClientTokenId`: IAM is eventually
//!    consistent, and a new key takes seconds to be accepted everywhere.
//! 7. keyring: the new key replaces the old one as the profile's key (one atomic write).
//! 8. `DeleteAccessKey` of the old key.
//! 9. keyring: the record is deleted.
//!
//! # Crash safety
//!
//! Two invariants hold at every instant, `kill -9` included:
//!
//! - **The profile's key entry holds a working key.** It is the old key until step 7 replaces it
//!   in one write, after STS accepted the new key; the old key is deleted in IAM only after that.
//! - **The user has at most two keys.** Step 2 leaves only the old key; `CreateAccessKey` runs at
//!   most once per record, and a run that finds a record deletes what the interrupted run may
//!   have created before it creates anything.
//!
//! A run that finds a record finishes (or undoes) the interrupted rotation first:
//!
//! - The record's new key is the profile's key (stopped in steps 8-9): delete the old key in IAM
//!   (already gone is fine) and drop the record.
//! - The record has a new key and the old key is still the profile's (stopped in steps 5-7):
//!   verify the new key and continue at step 7; if STS refuses it, delete it in IAM and drop the
//!   record.
//! - The record has no new key (stopped in steps 3-5; `CreateAccessKey` may have created a key
//!   whose answer never arrived): list the user's keys. A key that is not in the record's list
//!   and was created within [`ORPHAN_WINDOW`] of T is that call's orphan: credvend never saw its
//!   secret, so nobody can use it, and it is deleted. The window allows for IAM's clock differing
//!   from ours (SigV4 refuses more than 5 minutes) and the life of the request. Any other key
//!   credvend does not know is the user's and is left alone. The record is dropped and a new
//!   rotation starts (which stops at step 2 if such a key remains).
//! - Neither key of the record is the profile's key (it was replaced by hand since): the record
//!   is stale; it is dropped with a note, and a new rotation starts.
//!
//! The one case credvend cannot tell apart: a key made by hand within the window after a rotation
//! was interrupted before `CreateAccessKey` answered looks exactly like that call's orphan.
//!
//! # Signing
//!
//! STS calls (steps 1 and 6) are signed with the key they check. IAM calls are signed with the
//! stored key, or, when the profile's chain has an `mfa_serial`, with the MFA session that
//! `credvend login` cached in the keyring (IAM policies often demand `aws:MultiFactorAuthPresent`
//! for key management). Every IAM call names the user (`UserName`), which IAM requires when it
//! is signed with temporary credentials.
//!
//! # The daemon
//!
//! A running daemon needs no signal: `Minter` (`src/mint/mod.rs`) reads the long-term key from
//! the keyring at every mint that starts from it (`Minter::long_term_key`, and each backend opens
//! a fresh connection or keyring lookup per read), so its next mint uses the new key; credentials
//! it already serves stay valid until they expire. Cached intermediate links remember the key id
//! they were assumed with and are replaced once it changes; a cached MFA session lasts until it
//! ends, and the next one is minted with the new key.
//!
//! Endpoints: IAM per [`iam_endpoint`]; STS per the profile's own settings, as `credvend add`
//! verifies keys (`resolve::key_target`).

use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context as _, bail};
use time::OffsetDateTime;

use super::open_keystore;
use crate::context::{Context, SdkEnv};
use crate::creds::{LongTermKey, SigningKey, TemporaryCredentials};
use crate::iam::{AccessKeyInfo, IamClient, IamEndpoint, IamError};
use crate::keystore::{KeyStore, RotationRecord};
use crate::profile::file::{ProfileSet, Section};
use crate::profile::resolve::{self, Source};
use crate::sts::{CallerIdentity, ClientOptions, StsClient, StsEndpoint, StsError};

/// How long to wait for STS to accept a new key (IAM's propagation delay).
pub(crate) const PROPAGATION_WAIT: Duration = Duration::from_secs(30);

/// How far from a rotation's start a key may have been created to be taken for the orphan of its
/// `CreateAccessKey`: SigV4's 5-minute clock tolerance, plus a minute for the request itself
/// (the client gives up after 25 s).
pub(crate) const ORPHAN_WINDOW: time::Duration = time::Duration::minutes(6);

/// An MFA session is used for the IAM calls only with at least this long left.
const SESSION_MIN_LEFT: time::Duration = time::Duration::minutes(5);

/// `credvend rotate`.
#[derive(Debug, clap::Args)]
pub struct RotateArgs {
    /// Profile whose stored key to rotate (the profile the key is stored for)
    profile: String,
}

/// Where the IAM calls of a rotation of `profile` go, resolved as botocore resolves a service's
/// endpoint (`botocore/configprovider.py`, `ConfiguredEndpointProvider`, botocore 1.44): unless
/// `AWS_IGNORE_CONFIGURED_ENDPOINT_URLS` (or the profile's `ignore_configured_endpoint_urls`) is
/// `true`, the first of `AWS_ENDPOINT_URL_IAM`, `AWS_ENDPOINT_URL`, the profile's `[services]`
/// section's `iam = endpoint_url =`, the profile's `endpoint_url`; else IAM's own endpoint for
/// the region's partition. A `services` name without its section is an error, as in botocore,
/// but only when the lookup gets that far. The region (signing region of a custom endpoint, and
/// the partition) is `AWS_REGION`, `AWS_DEFAULT_REGION`, the profile's `region`, else
/// `us-east-1`. Pure.
pub(crate) fn iam_endpoint(
    set: &ProfileSet,
    profile: &str,
    env: &SdkEnv,
) -> Result<IamEndpoint, String> {
    let empty = Section {
        name: profile.to_owned(),
        ..Default::default()
    };
    let section = set.profiles.get(profile).unwrap_or(&empty);
    let setting = |key: &str| section.get(key).map(str::trim).filter(|v| !v.is_empty());
    let region = env
        .region
        .clone()
        .or_else(|| setting("region").map(str::to_owned))
        .unwrap_or_else(|| "us-east-1".to_owned());
    let ignore = env
        .ignore_configured_endpoint_urls
        .as_deref()
        .or_else(|| setting("ignore_configured_endpoint_urls"))
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("true"));
    let configured = if ignore {
        None
    } else if let Some(url) = &env.endpoint_url_iam {
        Some((url.clone(), "AWS_ENDPOINT_URL_IAM".to_owned()))
    } else if let Some(url) = &env.endpoint_url {
        Some((url.clone(), "AWS_ENDPOINT_URL".to_owned()))
    } else {
        let services = match setting("services") {
            None => None,
            Some(name) => Some(set.services.get(name).ok_or_else(|| {
                format!("profile `{profile}`: services = {name} names no [services {name}] section")
            })?),
        };
        services
            .and_then(|s| s.sub("iam", "endpoint_url"))
            .map(|u| {
                (
                    u.trim().to_owned(),
                    format!("profile `{profile}`: [services] iam endpoint_url"),
                )
            })
            .or_else(|| {
                setting("endpoint_url")
                    .map(|u| (u.to_owned(), format!("profile `{profile}`: endpoint_url")))
            })
    };
    match configured {
        Some((url, from)) => {
            let parsed = reqwest::Url::parse(url.trim())
                .ok()
                .filter(|u| matches!(u.scheme(), "http" | "https") && u.host().is_some())
                .ok_or_else(|| format!("{from} = {url:?} is not an http(s) URL"))?;
            if !StsEndpoint::valid_region(&region) {
                return Err(format!("region {region:?} is not a region name"));
            }
            Ok(IamEndpoint::custom(parsed, &region))
        }
        None => IamEndpoint::aws(&region)
            .ok_or_else(|| format!("region {region:?} is not a region name (e.g. us-east-1)")),
    }
}

/// The user name in an IAM user's ARN (`arn:PARTITION:iam::ACCOUNT:user/PATH/NAME`); `None` for
/// any other principal (root, an assumed role, a federated user). Pure.
pub(crate) fn user_name_of(arn: &str) -> Option<&str> {
    let mut parts = arn.splitn(6, ':');
    let (prefix, _, service, _, _, resource) = (
        parts.next()?,
        parts.next()?,
        parts.next()?,
        parts.next()?,
        parts.next()?,
        parts.next()?,
    );
    if prefix != "arn" || service != "iam" {
        return None;
    }
    let path = resource.strip_prefix("user/")?;
    path.rsplit('/').next().filter(|n| !n.is_empty())
}

/// Why a rotation cannot start (step 2). Pure data; [`SlotTaken::message`] words it.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Precheck {
    /// IAM does not list the stored key for the user.
    StoredNotListed,
    /// The user has a key besides the stored one.
    SlotTaken(SlotTaken),
}

/// A key of the user's own that occupies the second slot.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct SlotTaken {
    /// Its id.
    pub id: String,
    /// Its status.
    pub status: String,
}

impl SlotTaken {
    /// One line naming the key and the fix.
    fn message(&self, profile: &str, user: &str, stored: &str) -> String {
        format!(
            "IAM user {user} already has a second access key, {} ({}), besides {stored} stored \
             for `{profile}`: IAM allows two keys and a rotation needs the free slot. credvend \
             never deletes a key it did not make; if you no longer use {}, delete it \
             (aws iam delete-access-key --user-name {user} --access-key-id {}) and run \
             `credvend rotate {profile}` again",
            self.id,
            self.status.to_ascii_lowercase(),
            self.id,
            self.id
        )
    }
}

/// Step 2's decision: the ids of the user's keys when the stored key is the only one. Pure.
pub(crate) fn precheck(listed: &[AccessKeyInfo], stored: &str) -> Result<Vec<String>, Precheck> {
    if !listed.iter().any(|k| k.access_key_id == stored) {
        return Err(Precheck::StoredNotListed);
    }
    if let Some(other) = listed.iter().find(|k| k.access_key_id != stored) {
        return Err(Precheck::SlotTaken(SlotTaken {
            id: other.access_key_id.clone(),
            status: other.status.as_str().to_owned(),
        }));
    }
    Ok(listed.iter().map(|k| k.access_key_id.clone()).collect())
}

/// The keys an interrupted rotation left that credvend has no secret for: `orphans` to delete
/// (created by the rotation's `CreateAccessKey`), `foreign` to leave alone (the user's). Keys the
/// record lists as existing before, the stored key and the record's new key are neither.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Leftovers {
    /// Created within [`ORPHAN_WINDOW`] of the rotation's start: the orphan of its create.
    pub orphans: Vec<String>,
    /// Created outside the window, or at a time IAM did not say.
    pub foreign: Vec<String>,
}

/// Sorts the keys IAM lists after an interrupted rotation into [`Leftovers`]. Pure.
pub(crate) fn leftovers(
    listed: &[AccessKeyInfo],
    record: &RotationRecord,
    stored: &str,
) -> Leftovers {
    let mut out = Leftovers::default();
    let new = record.new_key.as_ref().map(|k| k.access_key_id.as_str());
    for k in listed {
        let id = k.access_key_id.as_str();
        if id == stored || Some(id) == new || record.existing_key_ids.iter().any(|e| e == id) {
            continue;
        }
        let in_window = k
            .create_date
            .is_some_and(|d| (d - record.started).abs() <= ORPHAN_WINDOW);
        if in_window {
            out.orphans.push(id.to_owned());
        } else {
            out.foreign.push(id.to_owned());
        }
    }
    out
}

/// What a run that finds a rotation record does first.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Resume {
    /// The new key is the profile's key: delete the old key, drop the record.
    DeleteOld,
    /// The old key is still the profile's key and a new key is pending: verify it, then finish.
    VerifyPending,
    /// No new key: clean up what `CreateAccessKey` may have left, drop the record, start over.
    CleanUp,
    /// The profile's key is neither: the record is stale; drop it and start over.
    Stale,
}

/// Which [`Resume`] applies to `record` when the profile's key is `stored`. Pure.
pub(crate) fn resume_action(record: &RotationRecord, stored: &str) -> Resume {
    match &record.new_key {
        Some(new) if new.access_key_id == stored => Resume::DeleteOld,
        Some(_) if record.old_access_key_id == stored => Resume::VerifyPending,
        None if record.old_access_key_id == stored => Resume::CleanUp,
        _ => Resume::Stale,
    }
}

/// Prints one step.
fn say(line: &str) {
    eprintln!("credvend: {line}");
}

/// Everything a rotation of one profile talks to.
struct Rotation<'a> {
    profile: &'a str,
    store: KeyStore,
    sts: StsClient,
    sts_endpoint: StsEndpoint,
    iam: IamClient,
    iam_endpoint: IamEndpoint,
    /// The MFA session IAM calls are signed with, when the chain has an `mfa_serial`.
    session: Option<TemporaryCredentials>,
}

/// `credvend rotate PROFILE`.
pub async fn rotate(ctx: &Context, args: RotateArgs) -> anyhow::Result<ExitCode> {
    let profile = args.profile.as_str();
    let set = ctx.load_profiles().map_err(anyhow::Error::msg)?;
    let mfa_profile = mfa_profile(ctx, &set, profile)?;
    let iam_endpoint = iam_endpoint(&set, profile, &ctx.sdk_env).map_err(anyhow::Error::msg)?;
    let sts_target = super::keys::verify_target(ctx, &set, profile)?;
    let sts = StsClient::new(ClientOptions {
        ca_bundle: sts_target.ca_bundle.clone(),
        ..ClientOptions::default()
    })?;
    let store = open_keystore(ctx, true).await?;
    let session = match mfa_profile {
        None => None,
        Some(base) => Some(mfa_session(&store, profile, &base).await?),
    };
    let rotation = Rotation {
        profile,
        iam: IamClient::from_sts(&sts),
        sts,
        sts_endpoint: sts_target.endpoint,
        iam_endpoint,
        store,
        session,
    };
    let new_id = rotation.run().await?;
    println!("{new_id}");
    super::keys::tell_daemon(ctx, profile, false).await;
    Ok(ExitCode::SUCCESS)
}

/// The profile whose MFA session signs IAM calls, when the chain of `profile` has an
/// `mfa_serial`. `profile` must be the one the key is stored for (a profile not in the AWS config
/// is a bare key: no MFA).
fn mfa_profile(ctx: &Context, set: &ProfileSet, profile: &str) -> anyhow::Result<Option<String>> {
    if !set.profiles.contains_key(profile) {
        return Ok(None);
    }
    let chain = resolve::resolve(set, profile, &ctx.env, &resolve::read_file)?;
    match &chain.source {
        Source::Keys { keys, .. } if keys == profile => {
            Ok(chain.mfa_session().map(|(s, _)| s.profile.clone()))
        }
        Source::Keys { keys, .. } => bail!(
            "profile `{profile}` uses the key stored for `{keys}`: rotate that one \
             (`credvend rotate {keys}`)"
        ),
        _ => bail!(
            "profile `{profile}` gets its credentials from {}, not from a key in the keyring: \
             there is no key to rotate",
            chain.describe()
        ),
    }
}

/// The MFA session `credvend login` cached for `base`, with time left for a rotation.
async fn mfa_session(
    store: &KeyStore,
    profile: &str,
    base: &str,
) -> anyhow::Result<TemporaryCredentials> {
    let now = OffsetDateTime::now_utc();
    match store.get_session(base).await? {
        Some(s) if s.remaining(now) > SESSION_MIN_LEFT => {
            say(&format!(
                "signing IAM calls with the MFA session of `{base}` (profile `{profile}` has an \
                 mfa_serial)"
            ));
            Ok(s)
        }
        _ => bail!(
            "profile `{profile}` has an mfa_serial, so its IAM calls are signed with the MFA \
             session, and none with {} minutes left is cached: run `credvend login {profile}` \
             first",
            SESSION_MIN_LEFT.whole_minutes()
        ),
    }
}

impl Rotation<'_> {
    /// Signing credentials for IAM: the MFA session, else `key`.
    fn iam_signer<'k>(&'k self, key: &'k LongTermKey) -> SigningKey<'k> {
        match &self.session {
            Some(s) => s.signing_key(),
            None => key.signing_key(),
        }
    }

    async fn run(&self) -> anyhow::Result<String> {
        let profile = self.profile;
        let stored = self.store.get_key(profile).await?;
        if let Some(record) = self.store.get_rotation(profile).await?
            && let Some(done) = self.resume(&record, &stored).await?
        {
            return Ok(done);
        }
        self.fresh(&stored).await
    }

    /// Finishes or undoes the rotation `record` describes. `Some(new key id)` when that
    /// completed the rotation; `None` when a new one must start.
    async fn resume(
        &self,
        record: &RotationRecord,
        stored: &LongTermKey,
    ) -> anyhow::Result<Option<String>> {
        let (profile, user) = (self.profile, record.user_name.as_str());
        say(&format!(
            "found an interrupted rotation of `{profile}` (started {}, old key {}, IAM user {user})",
            crate::creds::format_aws_time(record.started),
            record.old_access_key_id
        ));
        match (
            resume_action(record, &stored.access_key_id),
            &record.new_key,
        ) {
            (Resume::DeleteOld, _) => {
                self.finish(record, stored, stored, false).await?;
                Ok(Some(stored.access_key_id.clone()))
            }
            (Resume::VerifyPending, Some(new)) => {
                self.verify_or_undo(record, new, stored).await?;
                self.finish(record, new, stored, true).await?;
                Ok(Some(new.access_key_id.clone()))
            }
            (Resume::CleanUp, _) => {
                self.clean_up(record, stored).await?;
                Ok(None)
            }
            (Resume::Stale | Resume::VerifyPending, _) => {
                let pending = record
                    .new_key
                    .as_ref()
                    .map(|k| format!(" and {}", k.access_key_id))
                    .unwrap_or_default();
                say(&format!(
                    "the key stored for `{profile}` ({}) is not one of that rotation ({}{pending}): \
                     it was replaced by hand since; forgetting the record (check that user {user} \
                     still uses every key IAM lists for it)",
                    stored.access_key_id, record.old_access_key_id
                ));
                self.store.delete_rotation(profile).await?;
                Ok(None)
            }
        }
    }

    /// After an interruption before the new key was stored: deletes the orphan of
    /// `CreateAccessKey`, leaves the user's keys alone, drops the record.
    async fn clean_up(&self, record: &RotationRecord, stored: &LongTermKey) -> anyhow::Result<()> {
        let user = record.user_name.as_str();
        let listed = self
            .iam
            .list_access_keys(&self.iam_endpoint, self.iam_signer(stored), Some(user))
            .await?;
        let found = leftovers(&listed, record, &stored.access_key_id);
        for id in &found.orphans {
            self.delete_at_iam(stored, user, id).await?;
            say(&format!(
                "deleted {id} in IAM: the interrupted rotation created it and its secret never \
                 reached credvend"
            ));
        }
        for id in &found.foreign {
            say(&format!(
                "left {id} alone: it was not created by the interrupted rotation"
            ));
        }
        if found.orphans.is_empty() {
            say("the interrupted rotation created no key");
        }
        self.store.delete_rotation(self.profile).await?;
        Ok(())
    }

    /// A rotation from the start (steps 1 to 9).
    async fn fresh(&self, old: &LongTermKey) -> anyhow::Result<String> {
        let profile = self.profile;
        let id = self
            .sts
            .caller_identity(&self.sts_endpoint, old.signing_key())
            .await
            .with_context(|| {
                format!(
                    "STS at {} did not accept the key stored for `{profile}` ({}), so it cannot \
                     be rotated",
                    self.sts_endpoint.url, old.access_key_id
                )
            })?;
        let Some(user) = user_name_of(&id.arn) else {
            bail!(
                "the key stored for `{profile}` belongs to {}, not to an IAM user: credvend \
                 rotates IAM users' keys",
                id.arn
            );
        };
        say(&format!(
            "rotating {} of IAM user {user} (profile `{profile}`)",
            old.access_key_id
        ));
        let listed = self
            .iam
            .list_access_keys(&self.iam_endpoint, self.iam_signer(old), Some(user))
            .await?;
        let existing = precheck(&listed, &old.access_key_id).map_err(|e| match e {
            Precheck::StoredNotListed => anyhow::anyhow!(
                "IAM does not list {} among the keys of user {user}; try again in a minute (IAM \
                 is eventually consistent)",
                old.access_key_id
            ),
            Precheck::SlotTaken(t) => {
                anyhow::anyhow!(t.message(profile, user, &old.access_key_id))
            }
        })?;
        let mut record = RotationRecord {
            user_name: user.to_owned(),
            old_access_key_id: old.access_key_id.clone(),
            started: OffsetDateTime::now_utc(),
            existing_key_ids: existing,
            new_key: None,
        };
        self.store.put_rotation(profile, &record).await?;
        say("recorded the rotation in the keyring");
        let new = self.create(old, user).await?;
        record.new_key = Some(new.clone());
        if let Err(e) = self.store.put_rotation(profile, &record).await {
            self.delete_at_iam(old, user, &new.access_key_id)
                .await
                .with_context(|| {
                    format!("the keyring refused the new key ({e}) and deleting it in IAM failed")
                })?;
            self.store.delete_rotation(profile).await.ok();
            bail!(
                "the keyring refused the new key {} ({e}); it was deleted in IAM again and \
                 `{profile}` keeps {}",
                new.access_key_id,
                old.access_key_id
            );
        }
        say(&format!(
            "created {}; kept in the keyring as pending until STS accepts it",
            new.access_key_id
        ));
        self.verify_or_undo(&record, &new, old).await?;
        self.finish(&record, &new, old, true).await?;
        Ok(new.access_key_id)
    }

    /// Step 4. A refusal drops the record (nothing was created); an unknown outcome keeps it for
    /// the next run to clean up.
    async fn create(&self, old: &LongTermKey, user: &str) -> anyhow::Result<LongTermKey> {
        let profile = self.profile;
        match self
            .iam
            .create_access_key(&self.iam_endpoint, self.iam_signer(old), Some(user))
            .await
        {
            Ok(created) => Ok(created.key),
            Err(e @ IamError::CreateOutcomeUnknown { .. }) => bail!(
                "{e}; `{profile}` keeps {} and `credvend rotate {profile}` deletes such a key \
                 before anything else",
                old.access_key_id
            ),
            Err(e) => {
                self.store.delete_rotation(profile).await?;
                Err(e.into())
            }
        }
    }

    /// Step 6; when STS refuses the new key, deletes it in IAM and drops the record.
    async fn verify_or_undo(
        &self,
        record: &RotationRecord,
        new: &LongTermKey,
        old: &LongTermKey,
    ) -> anyhow::Result<()> {
        let profile = self.profile;
        let user = record.user_name.as_str();
        match self.verify(new).await {
            Ok(id) if user_name_of(&id.arn) == Some(user) => {
                say(&format!("STS accepts {} ({})", new.access_key_id, id.arn));
                Ok(())
            }
            Ok(id) => bail!(
                "the new key {} belongs to {}, not to IAM user {user}; `{profile}` keeps {}; \
                 delete the new key by hand",
                new.access_key_id,
                id.arn,
                old.access_key_id
            ),
            Err(e) if is_refusal(&e) => {
                self.delete_at_iam(old, user, &new.access_key_id)
                    .await
                    .with_context(|| {
                        format!(
                            "STS refused the new key {} and deleting it in IAM failed; run \
                             `credvend rotate {profile}` again",
                            new.access_key_id
                        )
                    })?;
                self.store.delete_rotation(profile).await?;
                bail!(
                    "STS did not accept the new key {} within {} s ({e}); it was deleted in IAM \
                     again and `{profile}` keeps {}",
                    new.access_key_id,
                    PROPAGATION_WAIT.as_secs(),
                    old.access_key_id
                )
            }
            Err(e) => bail!(
                "could not verify the new key {} ({e}); `{profile}` keeps {} and the new key \
                 stays pending: run `credvend rotate {profile}` again",
                new.access_key_id,
                old.access_key_id
            ),
        }
    }

    /// `GetCallerIdentity` with `key`, waiting out IAM's propagation: `InvalidClientTokenId`
    /// (STS does not know the key yet) is retried with backoff until [`PROPAGATION_WAIT`].
    async fn verify(&self, key: &LongTermKey) -> Result<CallerIdentity, StsError> {
        let deadline = tokio::time::Instant::now() + PROPAGATION_WAIT;
        let mut delays = propagation_delays();
        loop {
            match self
                .sts
                .caller_identity(&self.sts_endpoint, key.signing_key())
                .await
            {
                Err(e) if e.code() == Some("InvalidClientTokenId") => {
                    let delay = delays.next().unwrap_or(Duration::from_secs(5));
                    if tokio::time::Instant::now() + delay > deadline {
                        return Err(e);
                    }
                    say(&format!(
                        "STS does not know {} yet (IAM propagation); asking again in {} ms",
                        key.access_key_id,
                        delay.as_millis()
                    ));
                    tokio::time::sleep(delay).await;
                }
                other => return other,
            }
        }
    }

    /// Steps 7 (when `promote`), 8 and 9; IAM calls signed with `signer` (or the MFA session).
    async fn finish(
        &self,
        record: &RotationRecord,
        new: &LongTermKey,
        signer: &LongTermKey,
        promote: bool,
    ) -> anyhow::Result<()> {
        let profile = self.profile;
        if promote {
            self.store.put_key(profile, new).await?;
            say(&format!(
                "{} is now the key of `{profile}` in the {} (replacing {})",
                new.access_key_id,
                self.store.backend(),
                record.old_access_key_id
            ));
        }
        let old = &record.old_access_key_id;
        if self
            .delete_at_iam(signer, &record.user_name, old)
            .await
            .with_context(|| {
                format!(
                    "`{profile}` uses the new key {} but the old key {old} could not be deleted \
                     in IAM; run `credvend rotate {profile}` again",
                    new.access_key_id
                )
            })?
        {
            say(&format!("deleted the old key {old} in IAM"));
        } else {
            say(&format!("the old key {old} was already deleted in IAM"));
        }
        self.store.delete_rotation(profile).await?;
        say(&format!(
            "rotation of `{profile}` complete: {}",
            new.access_key_id
        ));
        Ok(())
    }

    /// `DeleteAccessKey`; `Ok(false)` when IAM has no such key (any more).
    async fn delete_at_iam(
        &self,
        signer: &LongTermKey,
        user: &str,
        id: &str,
    ) -> Result<bool, IamError> {
        match self
            .iam
            .delete_access_key(&self.iam_endpoint, self.iam_signer(signer), Some(user), id)
            .await
        {
            Ok(()) => Ok(true),
            Err(e) if e.code() == Some("NoSuchEntity") => Ok(false),
            Err(e) => Err(e),
        }
    }
}

/// Whether STS refused the key itself (rather than being unreachable or failing).
fn is_refusal(e: &StsError) -> bool {
    matches!(
        e.code(),
        Some("InvalidClientTokenId" | "SignatureDoesNotMatch" | "AccessDenied")
    )
}

/// The waits between propagation retries: 0.5 s, doubling, at most 5 s.
fn propagation_delays() -> impl Iterator<Item = Duration> {
    (0u32..).map(|n| Duration::from_millis(500u64 << n.min(4)).min(Duration::from_secs(5)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::iam::AccessKeyStatus;
    use crate::profile::file::{FileKind, merge, parse};
    use secrecy::SecretString;
    use time::macros::datetime;

    fn set(config: &str) -> ProfileSet {
        merge(Some(parse(config, FileKind::Config).unwrap()), None)
    }

    fn env(pairs: &[(&str, &str)]) -> SdkEnv {
        let map: std::collections::HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        SdkEnv::from_lookup(|k| map.get(k).cloned())
    }

    fn ep(config: &str, vars: &[(&str, &str)]) -> Result<(String, String), String> {
        iam_endpoint(&set(config), "dev", &env(vars)).map(|e| (e.url.to_string(), e.signing_region))
    }

    const FULL: &str = "[profile dev]\nregion = eu-west-1\nendpoint_url = http://profile:1/\n\
                        services = local\n[services local]\niam =\n  endpoint_url = http://services:2/\n";

    #[test]
    fn iam_endpoint_follows_botocores_order() {
        let all = [
            ("AWS_ENDPOINT_URL_IAM", "http://env-iam:3/"),
            ("AWS_ENDPOINT_URL", "http://env-global:4/"),
        ];
        let at = |url: &str| Ok((url.to_owned(), "eu-west-1".to_owned()));
        assert_eq!(ep(FULL, &all), at("http://env-iam:3/"));
        assert_eq!(ep(FULL, &all[1..]), at("http://env-global:4/"));
        assert_eq!(ep(FULL, &[]), at("http://services:2/"));
        let no_services = "[profile dev]\nregion = eu-west-1\nendpoint_url = http://profile:1/\n";
        assert_eq!(ep(no_services, &[]), at("http://profile:1/"));
        // An STS-only services section does not move IAM.
        let sts_only = "[profile dev]\nregion = eu-west-1\nendpoint_url = http://profile:1/\n\
                        services = s\n[services s]\nsts =\n  endpoint_url = http://sts:9/\n";
        assert_eq!(ep(sts_only, &[]), at("http://profile:1/"));
        // Nothing configured: IAM's global endpoint, signed for us-east-1.
        assert_eq!(
            ep("[profile dev]\nregion = eu-west-1\n", &[]),
            Ok(("https://iam.amazonaws.com/".into(), "us-east-1".into()))
        );
        assert_eq!(
            ep("[profile dev]\nregion = cn-north-1\n", &[]).unwrap().1,
            "cn-north-1"
        );
    }

    #[test]
    fn ignoring_configured_endpoints_and_region_sources() {
        let ignore_env = [("AWS_IGNORE_CONFIGURED_ENDPOINT_URLS", "TRUE")];
        assert_eq!(
            ep(FULL, &ignore_env).unwrap().0,
            "https://iam.amazonaws.com/"
        );
        let ignore_profile = FULL.replace(
            "services = local\n",
            "services = local\nignore_configured_endpoint_urls = true\n",
        );
        assert_eq!(
            ep(&ignore_profile, &[("AWS_ENDPOINT_URL_IAM", "http://x:1/")])
                .unwrap()
                .0,
            "https://iam.amazonaws.com/"
        );
        // The environment's false beats the profile's true, as for every botocore setting.
        assert_eq!(
            ep(
                &ignore_profile,
                &[("AWS_IGNORE_CONFIGURED_ENDPOINT_URLS", "false")]
            )
            .unwrap()
            .0,
            "http://services:2/"
        );
        // Region: AWS_REGION, AWS_DEFAULT_REGION, the profile's, us-east-1.
        assert_eq!(
            ep(FULL, &[("AWS_REGION", "ap-south-1")]).unwrap().1,
            "ap-south-1"
        );
        assert_eq!(
            ep(FULL, &[("AWS_DEFAULT_REGION", "ca-central-1")])
                .unwrap()
                .1,
            "ca-central-1"
        );
        assert_eq!(
            ep("[profile dev]\nendpoint_url = http://m:1\n", &[])
                .unwrap()
                .1,
            "us-east-1"
        );
        // A profile that is not in the AWS config: the environment alone.
        assert_eq!(
            iam_endpoint(&set(""), "dev", &env(&[("AWS_ENDPOINT_URL", "http://m:5")]))
                .unwrap()
                .url
                .as_str(),
            "http://m:5/"
        );
    }

    #[test]
    fn iam_endpoint_mistakes_name_their_source() {
        let missing = "[profile dev]\nservices = nowhere\n";
        assert_eq!(
            ep(missing, &[]).unwrap_err(),
            "profile `dev`: services = nowhere names no [services nowhere] section"
        );
        // botocore never looks at the services section when the environment already answered.
        assert!(ep(missing, &[("AWS_ENDPOINT_URL", "http://m:1")]).is_ok());
        let e = ep("[profile dev]\nendpoint_url = ftp://x\n", &[]).unwrap_err();
        assert!(
            e.contains("profile `dev`: endpoint_url") && e.contains("ftp://x"),
            "{e}"
        );
        let e = ep("", &[("AWS_ENDPOINT_URL_IAM", "nonsense")]).unwrap_err();
        assert!(e.starts_with("AWS_ENDPOINT_URL_IAM"), "{e}");
        assert!(ep("[profile dev]\nregion = us east\n", &[]).is_err());
    }

    #[test]
    fn user_names_come_from_user_arns_only() {
        assert_eq!(
            user_name_of("arn:aws:iam::123456789012:user/alice"),
            Some("alice")
        );
        assert_eq!(
            user_name_of("arn:aws-cn:iam::123456789012:user/team/ops/bob"),
            Some("bob")
        );
        for other in [
            "arn:aws:iam::123456789012:root",
            "arn:aws:sts::123456789012:assumed-role/r/s",
            "arn:aws:sts::123456789012:federated-user/f",
            "arn:aws:iam::123456789012:user/",
            "not an arn",
        ] {
            assert_eq!(user_name_of(other), None, "{other}");
        }
    }

    fn info(id: &str, created: Option<OffsetDateTime>) -> AccessKeyInfo {
        AccessKeyInfo {
            access_key_id: id.into(),
            status: AccessKeyStatus::Active,
            create_date: created,
            user_name: Some("alice".into()),
        }
    }

    #[test]
    fn a_rotation_starts_only_with_the_second_slot_free() {
        let t = Some(datetime!(2026-01-01 00:00 UTC));
        assert_eq!(
            precheck(&[info("OLD", t)], "OLD"),
            Ok(vec!["OLD".to_owned()])
        );
        assert_eq!(
            precheck(&[info("OTHER", t)], "OLD"),
            Err(Precheck::StoredNotListed)
        );
        let mut inactive = info("MINE", t);
        inactive.status = AccessKeyStatus::Inactive;
        let Err(Precheck::SlotTaken(taken)) = precheck(&[info("OLD", t), inactive], "OLD") else {
            panic!("a second key must stop the rotation")
        };
        assert_eq!(
            taken,
            SlotTaken {
                id: "MINE".into(),
                status: "Inactive".into()
            }
        );
        let text = taken.message("dev", "alice", "OLD");
        assert!(
            text.contains("MINE (inactive)")
                && text.contains("never deletes a key it did not make")
                && text.contains("--user-name alice --access-key-id MINE")
                && text.contains("credvend rotate dev"),
            "{text}"
        );
    }

    fn record(new: Option<&str>) -> RotationRecord {
        RotationRecord {
            user_name: "alice".into(),
            old_access_key_id: "OLD".into(),
            started: datetime!(2026-01-01 12:00 UTC),
            existing_key_ids: vec!["OLD".into()],
            new_key: new.map(|id| LongTermKey {
                access_key_id: id.into(),
                secret_access_key: SecretString::from("s"),
            }),
        }
    }

    #[test]
    fn only_keys_created_around_the_start_are_orphans() {
        let r = record(None);
        let at = |m: i64| Some(r.started + time::Duration::seconds(m));
        let listed = [
            info("OLD", Some(datetime!(2025-01-01 00:00 UTC))),
            info("ORPHAN", at(3)),
            info("SKEWED", at(-240)),
            info("LATER", at(3600)),
            info("UNDATED", None),
        ];
        assert_eq!(
            leftovers(&listed, &r, "OLD"),
            Leftovers {
                orphans: vec!["ORPHAN".into(), "SKEWED".into()],
                foreign: vec!["LATER".into(), "UNDATED".into()],
            }
        );
        // The pending key and the stored key are credvend's own, never leftovers.
        let r = record(Some("NEW"));
        let listed = [info("OLD", at(-9999)), info("NEW", at(1))];
        assert_eq!(leftovers(&listed, &r, "OLD"), Leftovers::default());
    }

    #[test]
    fn where_an_interrupted_rotation_resumes() {
        assert_eq!(
            resume_action(&record(Some("NEW")), "NEW"),
            Resume::DeleteOld
        );
        assert_eq!(
            resume_action(&record(Some("NEW")), "OLD"),
            Resume::VerifyPending
        );
        assert_eq!(resume_action(&record(None), "OLD"), Resume::CleanUp);
        assert_eq!(resume_action(&record(None), "HAND"), Resume::Stale);
        assert_eq!(resume_action(&record(Some("NEW")), "HAND"), Resume::Stale);
    }

    #[test]
    fn propagation_backoff_doubles_to_a_cap_within_the_wait() {
        let d: Vec<u64> = propagation_delays()
            .take(7)
            .map(|d| d.as_millis() as u64)
            .collect();
        assert_eq!(d, [500, 1000, 2000, 4000, 5000, 5000, 5000]);
        let total: Duration = propagation_delays().take(8).sum();
        assert!(total >= PROPAGATION_WAIT - Duration::from_secs(5));
    }
}
