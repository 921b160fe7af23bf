//! `mount.stripefs`: the helper mount(8) runs for `mount -t stripefs` and fstab lines of type
//! stripefs, as `mount.stripefs SOURCE DIR [-sfnv] [-o OPTIONS]`. It is this binary under
//! another name (a symlink); it mounts like `stripefs mount --daemon SOURCE DIR -o OPTIONS`,
//! returning once the mount answers, as mount(8) expects of a helper.

use std::ffi::OsString;

use anyhow::{Context, Result, bail};

use crate::mount::{self, MountArgs};

/// The name mount(8) runs the helper by.
pub const NAME: &str = "mount.stripefs";

/// What mount(8) passed.
#[derive(Debug, Default, PartialEq, Eq)]
struct HelperArgs {
    positional: Vec<String>,
    options: Vec<String>,
    sloppy: bool,
    fake: bool,
    verbose: bool,
}

/// Whether this process was started as the helper (argv[0]'s file name).
pub fn invoked_as_helper() -> bool {
    std::env::args_os()
        .next()
        .and_then(|a| {
            std::path::Path::new(&a)
                .file_name()
                .map(|n| n == std::ffi::OsStr::new(NAME))
        })
        .unwrap_or(false)
}

/// Runs the helper on this process's arguments.
pub fn run() -> Result<()> {
    let args = parse(std::env::args_os().skip(1))?;
    let [source, dir] = args.positional.as_slice() else {
        bail!("usage: {NAME} SOURCE DIRECTORY [-sfnv] [-o OPTIONS]");
    };
    let mount_args = MountArgs {
        daemon: true,
        threads: stripefs_fs::mount::default_threads(),
        commit_interval: std::time::Duration::from_secs(5),
        allow_other: false,
        dev: false,
        log: None,
        extra_devices: Vec::new(),
        user_registered: None,
        user_registrations: None,
        user_connections: None,
        user_requests: None,
        user_bounce: None,
        user_workers: None,
        options: args.options.clone(),
        sloppy: args.sloppy,
        paths: vec![source.clone(), dir.clone()],
    };
    if args.verbose {
        eprintln!(
            "{NAME}: mounting {source} on {dir} with options {:?}",
            args.options
        );
    }
    if args.fake {
        // `mount -f`: check what can be checked, do nothing.
        crate::mount_options::parse(&args.options, args.sloppy)?;
        return Ok(());
    }
    mount::run(&mount_args)
}

/// Parses `SOURCE DIR [-sfnv] [-o OPTS] [-t TYPE]` in any order (`-oOPTS` too).
fn parse(argv: impl Iterator<Item = OsString>) -> Result<HelperArgs> {
    let mut args = HelperArgs::default();
    let mut argv = argv.map(|a| {
        a.into_string()
            .map_err(|a| anyhow::anyhow!("argument {a:?} is not UTF-8"))
    });
    while let Some(arg) = argv.next() {
        let arg = arg?;
        let Some(flags) = arg.strip_prefix('-').filter(|f| !f.is_empty()) else {
            args.positional.push(arg);
            continue;
        };
        for (i, c) in flags.char_indices() {
            match c {
                's' => args.sloppy = true,
                'f' => args.fake = true,
                'n' => {}
                'v' => args.verbose = true,
                'o' | 't' | 'N' => {
                    let rest = &flags[i + 1..];
                    let value = if rest.is_empty() {
                        argv.next()
                            .with_context(|| format!("-{c} needs a value"))??
                    } else {
                        rest.to_string()
                    };
                    if c == 'o' {
                        args.options.push(value);
                    }
                    break;
                }
                other => bail!("unknown flag -{other} (mount.stripefs takes -s -f -n -v -o)"),
            }
        }
    }
    Ok(args)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parsed(args: &[&str]) -> Option<HelperArgs> {
        parse(args.iter().map(OsString::from)).ok()
    }

    #[test]
    fn mounts_own_form() {
        let got = parsed(&[
            "UUID=ab",
            "/mnt/s",
            "-sv",
            "-o",
            "rw,threads=2",
            "-ocommit=3",
        ]);
        let want = HelperArgs {
            positional: vec!["UUID=ab".into(), "/mnt/s".into()],
            options: vec!["rw,threads=2".into(), "commit=3".into()],
            sloppy: true,
            fake: false,
            verbose: true,
        };
        assert_eq!(got, Some(want));
    }

    #[test]
    fn type_is_skipped_and_unknown_flags_refused() {
        let got = parsed(&["-t", "stripefs", "/dev/a", "/m"]).map(|a| a.positional);
        assert_eq!(got, Some(vec!["/dev/a".to_string(), "/m".to_string()]));
        assert!(parsed(&["/dev/a", "/m", "-x"]).is_none());
        assert!(parsed(&["/dev/a", "/m", "-o"]).is_none());
    }
}
