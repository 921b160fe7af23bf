//! Mount options in mount(8)'s `-o a,b=c` form: what `stripefs mount -o` and the
//! `mount.stripefs` helper take.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result, bail};

/// What the options asked for (`None`/empty: not given).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MountOpts {
    /// `threads=N`
    pub threads: Option<usize>,
    /// `commit=SECONDS`
    pub commit: Option<Duration>,
    /// `allow_other`
    pub allow_other: bool,
    /// `dev` (`Some(true)`) or `nodev` (`Some(false)`), the last one given.
    pub dev: Option<bool>,
    /// `device=PATH`, repeatable: more places to look for members.
    pub devices: Vec<PathBuf>,
    /// `log=FILE`
    pub log: Option<PathBuf>,
    /// The per-user limits of the control endpoint (`user_registered=SIZE`, ...).
    pub limits: LimitOpts,
}

/// Per-user limits of the control endpoint given as options (`None`: the default).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LimitOpts {
    /// `user_registered=SIZE`: bytes of buffers registered.
    pub registered_bytes: Option<u64>,
    /// `user_registrations=N`
    pub registrations: Option<u64>,
    /// `user_connections=N`
    pub connections: Option<u64>,
    /// `user_requests=N`: requests in flight.
    pub requests: Option<u64>,
    /// `user_bounce=SIZE`: bounce memory of unaligned requests.
    pub bounce_bytes: Option<u64>,
    /// `user_workers=N`: worker threads of the user's rings.
    pub workers: Option<u64>,
}

impl LimitOpts {
    /// `limits` with the values given here put over them.
    pub fn apply(&self, limits: &mut stripefs_fs::control::Limits) {
        let set = |to: &mut u64, from: Option<u64>| *to = from.unwrap_or(*to);
        set(&mut limits.registered_bytes, self.registered_bytes);
        set(&mut limits.registrations, self.registrations);
        set(&mut limits.connections, self.connections);
        set(&mut limits.requests, self.requests);
        set(&mut limits.bounce_bytes, self.bounce_bytes);
        set(&mut limits.workers, self.workers);
    }
}

/// Options that mount(8) passes along, that carry nothing for stripefs, or that say what a
/// stripefs mount always is (nosuid, noatime): accepted and ignored (`x-…`/`X-…` are
/// for other programs, such as systemd).
fn ignored(name: &str) -> bool {
    matches!(
        name,
        "rw" | "defaults" | "auto" | "noauto" | "nofail" | "_netdev" | "nosuid" | "noatime"
    ) || name.starts_with("x-")
        || name.starts_with("X-")
}

/// Parses comma-separated option lists (each `-o` given). An option stripefs does not know
/// is an error naming every such option, unless `sloppy` (mount's `-s`), which only warns.
pub fn parse(lists: &[String], sloppy: bool) -> Result<MountOpts> {
    let mut opts = MountOpts::default();
    let mut unknown = Vec::new();
    for option in lists.iter().flat_map(|l| l.split(',')) {
        if option.is_empty() || ignored(option) {
            continue;
        }
        if !apply(&mut opts, option)? {
            unknown.push(option.to_string());
        }
    }
    if !unknown.is_empty() {
        let message = format!(
            "unknown mount option(s): {} (stripefs takes threads=N, commit=SECONDS, \
             allow_other, dev, nodev, device=PATH, log=FILE, user_registered=SIZE, \
             user_registrations=N, user_connections=N, user_requests=N, user_bounce=SIZE, user_workers=N)",
            unknown.join(", ")
        );
        if !sloppy {
            bail!(message);
        }
        eprintln!("stripefs: ignored {message}");
    }
    Ok(opts)
}

/// Applies one option; `false` if it is not one of stripefs's.
fn apply(opts: &mut MountOpts, option: &str) -> Result<bool> {
    let (name, value) = match option.split_once('=') {
        Some((n, v)) => (n, Some(v)),
        None => (option, None),
    };
    let need = || {
        value
            .filter(|v| !v.is_empty())
            .with_context(|| format!("mount option {name} needs a value ({name}=…)"))
    };
    match name {
        "threads" => {
            let v = need()?;
            let n = v
                .parse::<usize>()
                .ok()
                .filter(|&n| n > 0)
                .with_context(|| format!("threads={v}: not a number of threads (1 or more)"))?;
            opts.threads = Some(n);
        }
        "commit" => {
            let v = need()?;
            let secs = v
                .parse::<u64>()
                .ok()
                .filter(|&s| s > 0)
                .with_context(|| format!("commit={v}: not a number of seconds (1 or more)"))?;
            opts.commit = Some(Duration::from_secs(secs));
        }
        "allow_other" if value.is_none() => opts.allow_other = true,
        "dev" if value.is_none() => opts.dev = Some(true),
        "nodev" if value.is_none() => opts.dev = Some(false),
        "user_registered" => opts.limits.registered_bytes = Some(size(name, need()?)?),
        "user_registrations" => opts.limits.registrations = Some(count(name, need()?)?),
        "user_connections" => opts.limits.connections = Some(count(name, need()?)?),
        "user_requests" => opts.limits.requests = Some(count(name, need()?)?),
        "user_bounce" => opts.limits.bounce_bytes = Some(size(name, need()?)?),
        "user_workers" => opts.limits.workers = Some(count(name, need()?)?),
        "device" => opts.devices.push(PathBuf::from(need()?)),
        "log" => opts.log = Some(PathBuf::from(need()?)),
        _ => return Ok(false),
    }
    Ok(true)
}

/// A size such as `4G` or `512M` (a per-user limit).
pub fn size(name: &str, value: &str) -> Result<u64> {
    stripefs_engine::spec::parse_size(value).with_context(|| format!("{name}={value}"))
}

/// A count of 1 or more (a per-user limit).
pub fn count(name: &str, value: &str) -> Result<u64> {
    value
        .parse::<u64>()
        .ok()
        .filter(|&n| n > 0)
        .with_context(|| format!("{name}={value}: not a number (1 or more)"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lists(s: &[&str]) -> Vec<String> {
        s.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn every_option_parses() {
        let opts = parse(
            &lists(&[
                "rw,threads=2,commit=7,allow_other,nodev",
                "device=/a,device=/b,log=/l,x-systemd.automount,nofail,dev",
            ]),
            false,
        )
        .ok();
        let want = MountOpts {
            threads: Some(2),
            commit: Some(Duration::from_secs(7)),
            allow_other: true,
            dev: Some(true),
            devices: vec![PathBuf::from("/a"), PathBuf::from("/b")],
            log: Some(PathBuf::from("/l")),
            limits: LimitOpts::default(),
        };
        assert_eq!(opts, Some(want));
    }

    #[test]
    fn per_user_limits_parse() {
        let opts = parse(
            &lists(&[
                "user_registered=2G,user_registrations=8,user_connections=3",
                "user_requests=64,user_bounce=16M,user_workers=5",
            ]),
            false,
        )
        .ok()
        .map(|o| o.limits);
        let want = LimitOpts {
            registered_bytes: Some(2 << 30),
            registrations: Some(8),
            connections: Some(3),
            requests: Some(64),
            bounce_bytes: Some(16 << 20),
            workers: Some(5),
        };
        assert_eq!(opts, Some(want));
        for bad in [
            "user_registered=lots",
            "user_registrations=0",
            "user_connections=",
            "user_requests=-1",
            "user_bounce",
        ] {
            assert!(parse(&lists(&[bad]), false).is_err(), "{bad}");
        }
    }

    #[test]
    fn unknown_options_are_named_unless_sloppy() {
        let text = parse(&lists(&["rw,noatime,ro,frob=1"]), false)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(text.contains(": ro, frob=1 ("), "{text}");
        assert!(parse(&lists(&["ro"]), true).is_ok());
    }

    #[test]
    fn bad_values_are_named() {
        for bad in [
            "threads=0",
            "threads=x",
            "commit=",
            "commit",
            "device",
            "log=",
        ] {
            assert!(parse(&lists(&[bad]), true).is_err(), "{bad}");
        }
    }
}
