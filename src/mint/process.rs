//! `credential_process` and `credvend_mfa_process`: running a helper program (no shell, bounded
//! time and output) and reading its answer (`credential_process` Version 1 JSON, or a 6-digit
//! code).

use secrecy::SecretString;

use crate::creds::{LongTermKey, TemporaryCredentials, parse_aws_time};

/// Longest a `credential_process` or `credvend_mfa_process` may run.
pub(crate) const PROCESS_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);

/// Largest output read from a `credential_process`.
const PROCESS_OUTPUT_MAX: usize = 64 * 1024;

/// What a `credential_process` printed.
#[derive(Debug)]
pub enum ProcessOutput {
    /// With a session token and expiry.
    Temporary(TemporaryCredentials),
    /// Without a session token.
    LongTerm(LongTermKey),
}

/// Parses `credential_process` Version 1 JSON.
pub fn parse_process_output(stdout: &[u8]) -> Result<ProcessOutput, String> {
    let v: serde_json::Value = serde_json::from_slice(stdout)
        .map_err(|e| format!("printed something that is not JSON ({e})"))?;
    if v.get("Version").and_then(|v| v.as_u64()) != Some(1) {
        return Err("printed JSON without \"Version\": 1 (an integer)".into());
    }
    let field = |name: &str| -> Result<Option<String>, String> {
        match v.get(name) {
            None | Some(serde_json::Value::Null) => Ok(None),
            Some(serde_json::Value::String(s)) if !s.is_empty() => Ok(Some(s.clone())),
            Some(_) => Err(format!("printed a {name} that is not a non-empty string")),
        }
    };
    let access_key_id = field("AccessKeyId")?.ok_or("printed no AccessKeyId")?;
    let secret = field("SecretAccessKey")?.ok_or("printed no SecretAccessKey")?;
    let token = field("SessionToken")?;
    let expiration = field("Expiration")?
        .map(|e| {
            parse_aws_time(&e)
                .map_err(|_| format!("printed an Expiration that is not ISO 8601: {e:?}"))
        })
        .transpose()?;
    let account_id = field("AccountId")?;
    match (token, expiration) {
        (Some(t), Some(exp)) => Ok(ProcessOutput::Temporary(TemporaryCredentials {
            access_key_id,
            secret_access_key: SecretString::from(secret),
            session_token: Some(SecretString::from(t)),
            expiration: exp,
            account_id,
            arn: None,
            packed_policy_size: None,
        })),
        (None, _) => Ok(ProcessOutput::LongTerm(LongTermKey {
            access_key_id,
            secret_access_key: SecretString::from(secret),
        })),
        (Some(_), None) => Err("printed a SessionToken without an Expiration; credvend needs the expiry to refresh in time".into()),
    }
}

async fn run_process(command: &[String]) -> Result<Vec<u8>, String> {
    let mut child = tokio::process::Command::new(&command[0])
        .args(&command[1..])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| format!("`{}` could not be started: {e}", command[0]))?;
    let mut stdout = child.stdout.take().expect("piped");
    let mut stderr = child.stderr.take().expect("piped");
    let run = async {
        let (a, b, status) = tokio::join!(
            read_capped(&mut stdout, PROCESS_OUTPUT_MAX, false),
            read_capped(&mut stderr, PROCESS_OUTPUT_MAX, true),
            child.wait()
        );
        let (out, out_overflowed) = a.map_err(|e| e.to_string())?;
        let (err, _) = b.map_err(|e| e.to_string())?;
        Ok::<_, String>((out, out_overflowed, err, status.map_err(|e| e.to_string())?))
    };
    let (out, out_overflowed, err, status) = tokio::time::timeout(PROCESS_TIMEOUT, run)
        .await
        .map_err(|_| {
            format!(
                "`{}` did not finish within {} s",
                command[0],
                PROCESS_TIMEOUT.as_secs()
            )
        })??;
    if !status.success() {
        let stderr = String::from_utf8_lossy(&err);
        let stderr = stderr.trim();
        let tail: String = stderr
            .chars()
            .rev()
            .take(500)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect();
        return Err(format!(
            "`{}` failed ({status}){}",
            command[0],
            if tail.is_empty() {
                String::new()
            } else {
                format!(": {}", tail.replace('\n', " "))
            }
        ));
    }
    if out_overflowed {
        return Err(format!(
            "`{}` printed more than {PROCESS_OUTPUT_MAX} bytes",
            command[0]
        ));
    }
    Ok(out)
}

/// Reads `r` to its end, keeping at most `max` bytes (the first ones, or with `tail` the last
/// ones); says whether there was more. Reading on past the cap keeps the child from blocking on
/// a full pipe.
async fn read_capped(
    mut r: impl tokio::io::AsyncRead + Unpin,
    max: usize,
    tail: bool,
) -> std::io::Result<(Vec<u8>, bool)> {
    use tokio::io::AsyncReadExt;
    let mut kept = Vec::new();
    let mut overflowed = false;
    let mut buf = [0u8; 8192];
    loop {
        let n = r.read(&mut buf).await?;
        if n == 0 {
            return Ok((kept, overflowed));
        }
        kept.extend_from_slice(&buf[..n]);
        if kept.len() > max {
            overflowed = true;
            if tail {
                kept.drain(..kept.len() - max);
            } else {
                kept.truncate(max);
            }
        }
    }
}

/// Runs a `credential_process` (no shell) and parses its output.
pub async fn run_credential_process(command: &[String]) -> Result<ProcessOutput, String> {
    parse_process_output(&run_process(command).await?)
}

pub(crate) async fn run_mfa_process(command: &[String]) -> Result<SecretString, String> {
    let out = run_process(command).await?;
    let code = String::from_utf8_lossy(&out).trim().to_owned();
    if code.len() != 6 || !code.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("`{}` did not print a 6-digit code", command[0]));
    }
    Ok(SecretString::from(code))
}

#[cfg(test)]
mod tests {
    use super::*;
    use secrecy::ExposeSecret;

    #[test]
    fn process_output_versions_and_shapes() {
        let ok = br#"{"Version": 1, "AccessKeyId": "ASIA1", "SecretAccessKey": "s", "SessionToken": "t", "Expiration": "2030-01-01T00:00:00Z"}"#;
        assert!(matches!(
            parse_process_output(ok),
            Ok(ProcessOutput::Temporary(_))
        ));
        let long = br#"{"Version": 1, "AccessKeyId": "AKIA1", "SecretAccessKey": "s"}"#;
        assert!(matches!(
            parse_process_output(long),
            Ok(ProcessOutput::LongTerm(_))
        ));
        for (bad, needle) in [
            (&br#"{"Version": "1", "AccessKeyId": "a", "SecretAccessKey": "s"}"#[..], "Version"),
            (br#"{"Version": 2, "AccessKeyId": "a", "SecretAccessKey": "s"}"#, "Version"),
            (br#"{"Version": 1, "SecretAccessKey": "s"}"#, "AccessKeyId"),
            (br#"{"Version": 1, "AccessKeyId": "a", "SecretAccessKey": 5}"#, "SecretAccessKey"),
            (br#"{"Version": 1, "AccessKeyId": "a", "SecretAccessKey": "s", "SessionToken": "t"}"#, "Expiration"),
            (br#"{"Version": 1, "AccessKeyId": "a", "SecretAccessKey": "s", "SessionToken": "t", "Expiration": "soon"}"#, "ISO 8601"),
            (b"not json", "not JSON"),
        ] {
            let e = parse_process_output(bad).unwrap_err();
            assert!(e.contains(needle), "{e}");
            assert!(!e.contains("\"s\""), "no secret in {e}");
        }
    }

    #[tokio::test]
    async fn process_failures_carry_stderr() {
        let cmd = vec![
            "sh".into(),
            "-c".into(),
            "echo 'token expired, run login' >&2; exit 3".into(),
        ];
        let e = run_credential_process(&cmd).await.unwrap_err();
        assert!(e.contains("token expired, run login"), "{e}");
        assert!(e.contains("exit status: 3"), "{e}");
        let e = run_credential_process(&["/nonexistent/tool".into()])
            .await
            .unwrap_err();
        assert!(e.contains("could not be started"), "{e}");
    }

    #[tokio::test]
    async fn chatty_processes_neither_hang_nor_lose_their_last_words() {
        // 1 MiB of stderr (far more than a pipe holds) and then a valid answer.
        let cmd = vec![
            "sh".into(),
            "-c".into(),
            "head -c 1048576 /dev/zero | tr '\\0' x >&2; \
             echo '{\"Version\":1,\"AccessKeyId\":\"AKID\",\"SecretAccessKey\":\"s\"}'"
                .into(),
        ];
        assert!(matches!(
            run_credential_process(&cmd).await,
            Ok(ProcessOutput::LongTerm(_))
        ));
        // Failing after a flood of stderr: the error carries the end of it.
        let cmd = vec![
            "sh".into(),
            "-c".into(),
            "head -c 1048576 /dev/zero | tr '\\0' x >&2; echo ' the real reason' >&2; exit 2"
                .into(),
        ];
        let e = run_credential_process(&cmd).await.unwrap_err();
        assert!(e.contains("the real reason"), "{e}");
        // Too much stdout is reported as such, not as a timeout.
        let cmd = vec![
            "sh".into(),
            "-c".into(),
            "head -c 1048576 /dev/zero | tr '\\0' x".into(),
        ];
        let e = run_credential_process(&cmd).await.unwrap_err();
        assert!(e.contains("printed more than"), "{e}");
    }

    #[tokio::test]
    async fn mfa_process_must_print_six_digits() {
        assert_eq!(
            run_mfa_process(&["echo".into(), "123456".into()])
                .await
                .unwrap()
                .expose_secret(),
            "123456"
        );
        assert!(
            run_mfa_process(&["echo".into(), "12345".into()])
                .await
                .is_err()
        );
    }
}
