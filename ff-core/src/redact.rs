//! Keeping credentials out of every message: one redactor for every
//! backend URL ff prints (errors, logs, `Debug`, the CLI's labels).
//!
//! A password may hold any character — base64 passwords carry `/`, `+`
//! and `=`, generated ones `?`, `#` and `@` — so the user-info part is
//! taken to end at the *last* `@` that is followed by something shaped
//! like a host, not at the first `/`, `?` or `#`. Masking too much is
//! the safe failure: a message may lose its host name, never a secret.

/// `url` with its password hidden: the user-info's password (or, for
/// `redis://secret@host`, the lone secret; a Postgres URL's lone user-info
/// is a user name and stays) as `***`, and the value of
/// every query parameter whose name ends in `password` as `***`. Text
/// that is not a URL but holds an `@` or a password parameter is hidden
/// whole.
///
/// ```
/// use ff_core::redact::redact_url;
/// assert_eq!(redact_url("valkeys://app:S3c/r?t#x@db.internal:6380/0"), "valkeys://app:***@db.internal:6380/0");
/// assert_eq!(redact_url("postgres://db/app?user=ff&password=hunter2"), "postgres://db/app?user=ff&password=***");
/// assert_eq!(redact_url("redis://s3cret@localhost"), "redis://***@localhost");
/// ```
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return if url.contains('@') || has_password_param(url) {
            "<URL with credentials, hidden>".to_owned()
        } else {
            url.to_owned()
        };
    };
    let out = match userinfo_end(rest) {
        Some(at) => {
            let (userinfo, host_and_rest) = (&rest[..at], &rest[at..]);
            let hidden = match userinfo.split_once(':') {
                Some((user, _)) => format!("{user}:***"),
                // libpq's lone user-info is a user name; Redis clients read
                // `redis://secret@host` as a password.
                None if scheme.starts_with("postgres") => userinfo.to_owned(),
                None => "***".to_owned(),
            };
            format!("{scheme}://{hidden}{host_and_rest}")
        }
        None => url.to_owned(),
    };
    mask_password_params(&out)
}

/// Split what follows a URL's `://` into its user-info (if any) and the
/// rest, with the same rule the redactor uses: the user-info ends at the
/// last `@` followed by a host, so a password may hold `/`, `?`, `#` or
/// `@` unencoded.
///
/// ```
/// use ff_core::redact::split_userinfo;
/// assert_eq!(split_userinfo("app:a/b?c@db:6379/0"), (Some("app:a/b?c"), "db:6379/0"));
/// assert_eq!(split_userinfo("db:6379"), (None, "db:6379"));
/// assert_eq!(split_userinfo("app:pw@a:1,b:2/0"), (Some("app:pw"), "a:1,b:2/0"));
/// ```
pub fn split_userinfo(rest: &str) -> (Option<&str>, &str) {
    match userinfo_end(rest) {
        Some(at) => (Some(&rest[..at]), &rest[at + 1..]),
        None => (None, rest),
    }
}

/// `url` with its user-info's reserved characters (`/ ? # @` and, in the
/// password, `:`) percent-encoded, so a URL parser that follows the RFC
/// reads the password a person typed unencoded.
///
/// ```
/// use ff_core::redact::encode_userinfo;
/// assert_eq!(encode_userinfo("postgres://app:a/b@db/x"), "postgres://app:a%2Fb@db/x");
/// assert_eq!(encode_userinfo("postgres://db/x"), "postgres://db/x");
/// ```
pub fn encode_userinfo(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let (Some(userinfo), host) = split_userinfo(rest) else {
        return url.to_owned();
    };
    let encode = |s: &str, colon: bool| {
        s.chars()
            .fold(String::with_capacity(s.len()), |mut out, c| {
                match c {
                    '/' => out.push_str("%2F"),
                    '?' => out.push_str("%3F"),
                    '#' => out.push_str("%23"),
                    '@' => out.push_str("%40"),
                    ':' if colon => out.push_str("%3A"),
                    c => out.push(c),
                }
                out
            })
    };
    let userinfo = match userinfo.split_once(':') {
        Some((user, password)) => format!("{}:{}", encode(user, true), encode(password, true)),
        None => encode(userinfo, true),
    };
    format!("{scheme}://{userinfo}@{host}")
}

/// The index of the `@` ending the user-info in `rest` (what follows
/// `://`): the last `@` followed by a host-shaped run of characters up to
/// the next `/`, `?`, `#` or the end.
fn userinfo_end(rest: &str) -> Option<usize> {
    rest.match_indices('@').map(|(i, _)| i).rev().find(|&i| {
        let host = &rest[i + 1..];
        let end = host.find(['/', '?', '#']).unwrap_or(host.len());
        let host = &host[..end];
        !host.is_empty()
            && host.chars().all(|c| {
                c.is_ascii_alphanumeric()
                    || matches!(c, '.' | '-' | '_' | ':' | '[' | ']' | '%' | ',')
            })
    })
}

fn has_password_param(s: &str) -> bool {
    s.to_ascii_lowercase().contains("password=")
}

/// Every `…password=value` query parameter's value as `***`.
fn mask_password_params(url: &str) -> String {
    let Some(q) = url.find('?') else {
        return url.to_owned();
    };
    let (base, query) = url.split_at(q + 1);
    let params: Vec<String> = query
        .split('&')
        .map(|param| match param.split_once('=') {
            Some((name, _)) if name.to_ascii_lowercase().ends_with("password") => {
                format!("{name}=***")
            }
            _ => param.to_owned(),
        })
        .collect();
    format!("{base}{}", params.join("&"))
}

#[cfg(test)]
mod tests {
    use super::redact_url;

    #[test]
    fn passwords_with_any_character_are_hidden() {
        for password in [
            "S3cr/et",
            "a+b/c==",
            "p?q",
            "p#q",
            "p@ss",
            "p:q",
            "%2Fenc%40",
        ] {
            for url in [
                format!("valkey://app:{password}@db.example:6379/0"),
                format!("postgres://app:{password}@10.0.0.5:5432/app?sslmode=require"),
                format!("rediss://{password}@[::1]:6380"),
                format!("valkey://app:{password}@a:7000,b:7001,[::1]:7002/0?node=c:7003"),
            ] {
                let shown = redact_url(&url);
                assert!(
                    !shown.contains(password),
                    "{url:?} shown as {shown:?} reveals the password"
                );
                assert!(shown.contains("***"), "{shown}");
            }
        }
        assert_eq!(
            redact_url("valkey://app:a/b@db:6379/2"),
            "valkey://app:***@db:6379/2"
        );
        assert_eq!(
            redact_url("postgres://alice@db/app"),
            "postgres://alice@db/app"
        );
    }

    #[test]
    fn password_parameters_are_hidden_and_the_rest_kept() {
        assert_eq!(
            redact_url("postgresql://db?user=app&password=x&sslmode=verify-full"),
            "postgresql://db?user=app&password=***&sslmode=verify-full"
        );
        assert_eq!(
            redact_url("valkeys://h:6380/0?ca_cert=/etc/ca.pem&sslpassword=k"),
            "valkeys://h:6380/0?ca_cert=/etc/ca.pem&sslpassword=***"
        );
        assert_eq!(
            redact_url("host=db user=app password=x"),
            "<URL with credentials, hidden>"
        );
    }

    #[test]
    fn urls_without_credentials_are_unchanged() {
        for url in [
            "valkey://127.0.0.1:6379",
            "postgres://db:5432/app?sslmode=disable",
            "memory:",
            "valkeys://node-1.cache.internal:6380/0?partitions=8",
        ] {
            assert_eq!(redact_url(url), url);
        }
    }
}
