//! The least-privilege Valkey ACL accounts docs/valkey.md documents, as
//! `ACL SETUSER` rules for a key prefix, so tests create exactly what a
//! user is told to create.

/// What an account is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// Publishes events, applies retention and reads bounds.
    Publisher,
    /// Subscribes, tails, reads bounds; read-only on the streams.
    Consumer,
    /// A consumer that also stores its cursor in `{prefix}cursors`.
    ConsumerWithCursorStore,
}

/// Rights only a Valkey Cluster exercises (a standalone server never
/// redirects, so an account lacking them still works there).
pub const CLUSTER_ONLY: [&str; 1] = ["asking"];

/// The commands `role` needs (`ACL SETUSER` `+…` rules, without the `+`).
pub fn commands(role: Role) -> Vec<&'static str> {
    let setup = ["client|setname", "cluster|shards", "asking"];
    match role {
        Role::Publisher => setup
            .into_iter()
            .chain([
                "multi",
                "exec",
                "xadd",
                "eval",
                "exists",
                "xlen",
                "xrange",
                "xrevrange",
                "xtrim",
                "xinfo|stream",
                "xsetid",
                "time",
                "set",
                "get",
            ])
            .collect(),
        Role::Consumer => setup
            .into_iter()
            .chain(["multi", "exec", "xrange", "xinfo|stream", "get", "xread"])
            .collect(),
        Role::ConsumerWithCursorStore => {
            let mut c = commands(Role::Consumer);
            c.extend(["hget", "hset"]);
            c
        }
    }
}

/// The key rules of `role` under `prefix`.
pub fn keys(role: Role, prefix: &str) -> Vec<String> {
    match role {
        Role::Publisher => vec![format!("~{prefix}*")],
        Role::Consumer => vec![format!("%R~{prefix}*")],
        Role::ConsumerWithCursorStore => {
            vec![format!("%R~{prefix}*"), format!("%RW~{prefix}cursors")]
        }
    }
}

/// The `ACL SETUSER` arguments creating `user` with `password` for `role`
/// under `prefix`, leaving out the commands in `without`.
pub fn setuser_args(
    user: &str,
    password: &str,
    role: Role,
    prefix: &str,
    without: &[&str],
) -> Vec<String> {
    let mut args = vec![
        "SETUSER".to_owned(),
        user.to_owned(),
        "reset".to_owned(),
        "on".to_owned(),
        format!(">{password}"),
        "resetchannels".to_owned(),
    ];
    args.extend(keys(role, prefix));
    args.push("-@all".to_owned());
    args.extend(
        commands(role)
            .into_iter()
            .filter(|c| !without.contains(c))
            .map(|c| format!("+{c}")),
    );
    args
}
