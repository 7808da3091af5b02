//! Printing a configuration: every key described (from the doc comments of [`NodeConfig`]'s
//! fields), secrets redacted, in a file that reads back.

use super::{ConfigError, NodeConfig};

/// Words of `text` in lines of at most `width` characters (a longer word has a line of its own).
fn wrap(text: &str, width: usize) -> Vec<String> {
    let mut lines = Vec::new();
    let mut line = String::new();
    for word in text.split_whitespace() {
        if !line.is_empty() && line.chars().count() + 1 + word.chars().count() > width {
            lines.push(std::mem::take(&mut line));
        }
        if !line.is_empty() {
            line.push(' ');
        }
        line.push_str(word);
    }
    if !line.is_empty() {
        lines.push(line);
    }
    lines
}

/// What replaces a secret in printed configuration.
pub const REDACTED: &str = "<redacted>";

/// `url` with its password (if any) replaced by [`REDACTED`], for logs and printed
/// configuration.
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let (authority, path) = match rest.find('/') {
        Some(i) => rest.split_at(i),
        None => (rest, ""),
    };
    let Some((userinfo, host)) = authority.rsplit_once('@') else {
        return url.to_owned();
    };
    let user = match userinfo.split_once(':') {
        Some((user, _)) => format!("{user}:{REDACTED}"),
        None if scheme.starts_with("redis") || scheme.starts_with("nats") => REDACTED.to_owned(),
        None => userinfo.to_owned(),
    };
    format!("{scheme}://{user}@{host}{path}")
}

impl NodeConfig {
    /// This configuration with its secrets replaced: the server key, and passwords in service
    /// URLs.
    pub fn redacted(&self) -> NodeConfig {
        let mut c = self.clone();
        for secret in [&mut c.server_key, &mut c.metrics_token] {
            if secret.is_some() {
                *secret = Some(REDACTED.to_owned());
            }
        }
        for url in [&mut c.database, &mut c.nats, &mut c.redis]
            .into_iter()
            .flatten()
        {
            *url = redact_url(url);
        }
        c.content_peers = c.content_peers.iter().map(|u| redact_url(u)).collect();
        c
    }

    /// The configuration as a TOML file a user can edit: every key, with its description as a
    /// comment above it, secrets redacted.
    pub fn to_annotated_toml(&self) -> Result<String, ConfigError> {
        let fail = |e: String| ConfigError::Invalid(format!("cannot print the configuration: {e}"));
        let value = toml::Value::try_from(self.redacted()).map_err(|e| fail(e.to_string()))?;
        let toml::Value::Table(mut table) = value else {
            return Err(fail("not a table".into()));
        };
        // A redacted key would not work if the file were used as it is: show it commented out.
        let key_set = table.remove("server_key").is_some();
        let token_set = table.remove("metrics_token").is_some();
        let schema = schemars::schema_for!(NodeConfig);
        let describe = |key: &str| -> String {
            schema
                .schema
                .object
                .as_ref()
                .and_then(|o| o.properties.get(key))
                .and_then(|p| match p {
                    schemars::schema::Schema::Object(o) => o.metadata.as_ref(),
                    schemars::schema::Schema::Bool(_) => None,
                })
                .and_then(|m| m.description.clone())
                .unwrap_or_default()
        };
        let comment = |out: &mut String, key: &str| {
            for line in wrap(&describe(key), 94) {
                out.push_str("# ");
                out.push_str(&line);
                out.push('\n');
            }
        };
        let mut out = String::from(
            "# Volley node configuration. Each key is also a flag (--a-b) and an environment\n\
             # variable (VOLLEY_A_B); flags win over the environment, which wins over this file.\n\n",
        );
        let (tables, scalars): (Vec<_>, Vec<_>) = table.iter().partition(|(_, v)| v.is_table());
        let unset: Vec<&str> = [
            "public_addr",
            "database",
            "nats",
            "redis",
            "server_key",
            "metrics_token",
            "metrics_addr",
            "tls_cert",
            "tls_key",
        ]
        .into_iter()
        .filter(|k| !table.contains_key(*k))
        .collect();
        for (key, value) in scalars {
            comment(&mut out, key);
            out.push_str(&format!("{key} = {value}\n\n"));
        }
        for key in unset {
            comment(&mut out, key);
            if key == "server_key" && key_set {
                out.push_str(&format!(
                    "# {key} = \"{REDACTED}\" (set; give it in VOLLEY_SERVER_KEY)\n\n"
                ));
            } else if key == "metrics_token" && token_set {
                out.push_str(&format!(
                    "# {key} = \"{REDACTED}\" (set; give it in VOLLEY_METRICS_TOKEN)\n\n"
                ));
            } else {
                out.push_str(&format!("# {key} = (unset)\n\n"));
            }
        }
        for (key, value) in tables {
            comment(&mut out, key);
            let mut wrapper = toml::Table::new();
            wrapper.insert(key.clone(), value.clone());
            let text = toml::to_string(&wrapper).map_err(|e| fail(e.to_string()))?;
            if text.trim().is_empty() {
                out.push_str(&format!("[{key}]\n\n"));
            } else {
                out.push_str(&text);
                out.push('\n');
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn urls_lose_their_passwords_only() {
        assert_eq!(
            redact_url("postgres://volley:hunter2@db:5432/game"),
            "postgres://volley:<redacted>@db:5432/game"
        );
        assert_eq!(redact_url("postgres://db/game"), "postgres://db/game");
        assert_eq!(
            redact_url("redis://:pw@cache:6379/0"),
            "redis://:<redacted>@cache:6379/0"
        );
        assert_eq!(
            redact_url("nats://token@bus:4222"),
            "nats://<redacted>@bus:4222"
        );
        assert_eq!(redact_url("sqlite://x.db"), "sqlite://x.db");
    }

    #[test]
    fn the_annotated_file_reads_back_as_the_same_configuration() {
        let mut c = NodeConfig::default();
        c.pools
            .insert("duel".into(), volley_match::PoolConfig::new(2, 2));
        c.pool_modes.insert("duel".into(), "rollback".into());
        c.server_key = Some("a-server-key-of-some-length".into());
        let text = c.to_annotated_toml().unwrap();
        assert!(!text.contains("a-server-key-of-some-length"));
        assert!(text.contains("# Connect ticket lifetime."), "{text}");
        let back: NodeConfig = toml::from_str(&text).unwrap();
        assert_eq!(back.pools.len(), 1);
        assert_eq!(back.pool_modes["duel"], "rollback");
        assert_eq!(back.ticket_lifetime_ms, c.ticket_lifetime_ms);
        assert_eq!(back.server_key, None);
        assert!(text.contains("# server_key = \"<redacted>\""), "{text}");
    }

    /// The pool example in the README is a configuration the node accepts.
    #[test]
    fn the_readme_pool_example_is_valid() {
        let readme = include_str!("../../../../README.md");
        let start = readme.find("```toml\n[pools.").unwrap() + "```toml\n".len();
        let end = start + readme[start..].find("```").unwrap();
        let c: NodeConfig = toml::from_str(&readme[start..end]).unwrap();
        c.validate().unwrap();
        assert_eq!(c.pools["squads"].max_players, 8);
        assert_eq!(c.pool_modes["squads"], "snapshot");
    }
}
