//! Which columns a run measures: limit, SoftHSMv2, and one or more "ours" columns, each a
//! PKCS#11 module with its own configuration file (`$HSM_PKCS11_CONF`) and PIN variable.

use crate::error::{BenchError, Result};
use std::path::{Path, PathBuf};

/// The environment variable our module reads its configuration file from.
pub const CONF_ENV: &str = "HSM_PKCS11_CONF";

/// The option keys of an `--ours` value.
const OPTION_KEYS: &[&str] = &["pin-env", "module", "token", "node-pids"];

/// One `--ours` column as given on the command line:
/// `[LABEL=]CONF[,pin-env=VAR][,module=PATH][,token=LABEL][,node-pids=PID+PID…]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OursSpec {
    /// The column header, if given.
    pub label: Option<String>,
    /// The module configuration file (`$HSM_PKCS11_CONF` of the column's worker).
    pub conf: PathBuf,
    /// The variable holding the PIN, if not the default.
    pub pin_env: Option<String>,
    /// The module, if not the default.
    pub module: Option<PathBuf>,
    /// The token label, if not the first initialized token.
    pub token: Option<String>,
    /// The node processes serving the column, whose context switches the worker counts.
    pub node_pids: Vec<u32>,
}

impl OursSpec {
    /// Parses `[LABEL=]CONF[,pin-env=VAR][,module=PATH][,token=LABEL][,node-pids=PID+PID…]`. The label ends at the
    /// first `=`; the options are the trailing comma-separated pieces that start with a known
    /// key (a path may itself hold commas).
    ///
    /// # Errors
    /// An empty configuration path or an empty option value.
    pub fn parse(spec: &str) -> Result<OursSpec> {
        let bad = |why: &str| {
            BenchError::Usage(format!(
                "--ours {spec:?}: {why} (expected [LABEL=]CONF[,pin-env=VAR][,module=PATH][,token=LABEL][,node-pids=PID+PID…])"
            ))
        };
        // What precedes the first `=` is a label, unless it ends in an option key
        // (`CONF,pin-env=VAR` has no label).
        let (label, rest) = match spec.split_once('=') {
            Some((l, r)) if !OPTION_KEYS.contains(&l.rsplit(',').next().unwrap_or(l).trim()) => {
                (Some(l.trim().to_string()).filter(|l| !l.is_empty()), r)
            }
            _ => (None, spec),
        };
        let mut pieces: Vec<&str> = rest.split(',').collect();
        let (mut pin_env, mut module, mut token, mut pids) = (None, None, None, None);
        while pieces.len() > 1 {
            let last = pieces[pieces.len() - 1];
            let Some((key, value)) = last.split_once('=') else {
                break;
            };
            let slot = match key.trim() {
                "pin-env" => &mut pin_env,
                "module" => &mut module,
                "token" => &mut token,
                "node-pids" => &mut pids,
                _ => break,
            };
            if value.is_empty() {
                return Err(bad(&format!("{key}= needs a value")));
            }
            if slot.is_none() {
                *slot = Some(value.to_string());
            }
            pieces.pop();
        }
        let conf = pieces.join(",");
        if conf.trim().is_empty() {
            return Err(bad("no configuration file"));
        }
        let node_pids = match pids {
            None => Vec::new(),
            Some(p) => p
                .split('+')
                .map(|n| n.trim().parse::<u32>())
                .collect::<std::result::Result<Vec<u32>, _>>()
                .map_err(|_| bad("node-pids= takes process ids joined by +"))?,
        };
        Ok(OursSpec {
            label,
            conf: PathBuf::from(conf),
            pin_env,
            module: module.map(PathBuf::from),
            token,
            node_pids,
        })
    }
}

/// How many nodes a module configuration file lists (`nodes = [...]`), if it is ours and can
/// be read.
pub fn node_count(conf: &Path) -> Option<usize> {
    let text = std::fs::read_to_string(conf).ok()?;
    let table: toml::Table = toml::from_str(&text).ok()?;
    table
        .get("nodes")?
        .as_array()
        .map(Vec::len)
        .filter(|n| *n > 0)
}

/// "1 node", "3 nodes".
pub fn nodes_text(n: usize) -> String {
    if n == 1 {
        "1 node".into()
    } else {
        format!("{n} nodes")
    }
}

/// The default header of an ours column: `ours (3 nodes)`, or `ours` when the node count is
/// unknown.
pub fn default_label(nodes: Option<usize>) -> String {
    nodes.map_or_else(|| "ours".into(), |n| format!("ours ({})", nodes_text(n)))
}

/// The target id (and results file stem) of the `i`-th ours column (0-based): `ours`, `ours2`,
/// `ours3`, …
pub fn ours_target(i: usize) -> String {
    if i == 0 {
        "ours".into()
    } else {
        format!("ours{}", i + 1)
    }
}

/// Whether a target id is an ours column, and its position (0-based).
pub fn ours_index(target: &str) -> Option<usize> {
    let rest = target.strip_prefix("ours")?;
    if rest.is_empty() {
        return Some(0);
    }
    rest.parse::<usize>()
        .ok()
        .filter(|n| *n >= 2 && rest.starts_with(|c: char| c != '0'))
        .map(|n| n - 1)
}

/// Table order of a target id: limit, SoftHSMv2, then the ours columns in command-line order.
pub fn rank(target: &str) -> Option<usize> {
    match target {
        "limit" => Some(0),
        "softhsm" => Some(1),
        t => ours_index(t).map(|i| i + 2),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_specs() {
        let s = OursSpec::parse("ours (3 nodes)=/tmp/c3/pkcs11.toml,pin-env=PIN3").unwrap();
        assert_eq!(s.label.as_deref(), Some("ours (3 nodes)"));
        assert_eq!(s.conf, PathBuf::from("/tmp/c3/pkcs11.toml"));
        assert_eq!(s.pin_env.as_deref(), Some("PIN3"));
        assert_eq!(s.module, None);

        let s = OursSpec::parse("/c3/pkcs11.toml,pin-env=PIN3").unwrap();
        assert_eq!(s.label, None);
        assert_eq!(s.conf, PathBuf::from("/c3/pkcs11.toml"));
        assert_eq!(s.pin_env.as_deref(), Some("PIN3"));

        let s = OursSpec::parse("/a,b/pkcs11.toml").unwrap();
        assert_eq!(s.label, None);
        assert_eq!(s.conf, PathBuf::from("/a,b/pkcs11.toml"));

        let s = OursSpec::parse("x=/c.toml,token=t,module=/m.so,pin-env=P").unwrap();
        assert_eq!(s.token.as_deref(), Some("t"));
        assert_eq!(s.module, Some(PathBuf::from("/m.so")));
        assert_eq!(s.pin_env.as_deref(), Some("P"));

        let s = OursSpec::parse("x=/c.toml,pin-env=P,node-pids=12+345").unwrap();
        assert_eq!(s.node_pids, vec![12, 345]);
        assert_eq!(s.pin_env.as_deref(), Some("P"));
        assert!(OursSpec::parse("x=/c.toml,node-pids=12+x").is_err());

        assert!(OursSpec::parse("x=").is_err());
        assert!(OursSpec::parse("x=/c.toml,pin-env=").is_err());
    }

    #[test]
    fn target_ids() {
        assert_eq!(ours_target(0), "ours");
        assert_eq!(ours_target(1), "ours2");
        for i in 0..12 {
            assert_eq!(ours_index(&ours_target(i)), Some(i));
        }
        assert_eq!(ours_index("ours1"), None);
        assert_eq!(ours_index("ours02"), None);
        assert_eq!(ours_index("limit"), None);
        assert!(rank("softhsm") < rank("ours") && rank("ours") < rank("ours2"));
    }

    #[test]
    fn counts_nodes() {
        let dir = std::env::temp_dir().join(format!("hsm-bench-conf-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let conf = dir.join("pkcs11.toml");
        std::fs::write(
            &conf,
            "nodes = [\n  \"127.0.0.1:1\",\n  \"127.0.0.1:3\",\n  \"127.0.0.1:5\",\n]\nca_cert = \"ca.pem\"\n",
        )
        .unwrap();
        assert_eq!(node_count(&conf), Some(3));
        assert_eq!(node_count(&dir.join("missing.toml")), None);
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!(default_label(Some(1)), "ours (1 node)");
        assert_eq!(default_label(None), "ours");
    }
}
