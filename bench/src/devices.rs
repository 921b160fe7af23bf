//! Scratch devices: files on the disk (under /var/tmp, where O_DIRECT works), loop devices
//! over them, loop devices over memory (/dev/shm files), and emulated NVMe namespaces over
//! memory, uncapped or bandwidth-capped. Everything made here is removed on drop: loop
//! devices are detached before their backing files are deleted.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use stripefs_engine::spec::format_size;

use anyhow::{Context, Result, bail};
use serde::Serialize;

/// What the devices of a run are.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Kind {
    /// Regular files on the disk, opened O_DIRECT.
    File,
    /// Loop devices over the files, with direct I/O to the disk.
    Loop,
    /// Loop devices over files in /dev/shm: block devices that are not disk-bound.
    RamLoop,
    /// Emulated NVMe namespaces over memory, uncapped (stripefs only).
    EmuMem,
    /// Emulated NVMe namespaces over memory with a bandwidth cap (stripefs only).
    EmuCapped,
}

impl Kind {
    /// Short name for tables and file names.
    pub fn name(self) -> &'static str {
        match self {
            Kind::File => "file",
            Kind::Loop => "loop",
            Kind::RamLoop => "ramloop",
            Kind::EmuMem => "emu-mem",
            Kind::EmuCapped => "emu-capped",
        }
    }

    /// Whether the devices are paths that any program can open (fio, pread…).
    pub fn has_paths(self) -> bool {
        matches!(self, Kind::File | Kind::Loop | Kind::RamLoop)
    }

    /// Whether the data lives on the (shared, virtual) disk.
    pub fn disk_bound(self) -> bool {
        matches!(self, Kind::File | Kind::Loop)
    }

    pub(crate) fn needs_root(self) -> bool {
        matches!(self, Kind::Loop | Kind::RamLoop)
    }
}

/// The devices one measurement runs on.
#[derive(Clone, Debug)]
pub enum Devices {
    /// Files or block devices, opened O_DIRECT by every engine.
    Paths(Vec<PathBuf>),
    /// Emulated NVMe specs (without `qd=`, which the engine adds).
    Emulated(Vec<String>),
}

/// `count` devices of one kind.
#[derive(Clone, Debug)]
pub struct Target {
    pub kind: Kind,
    pub devices: Devices,
    /// Usable bytes of each device.
    pub device_size: u64,
}

impl Target {
    /// Number of devices.
    pub fn count(&self) -> usize {
        match &self.devices {
            Devices::Paths(p) => p.len(),
            Devices::Emulated(s) => s.len(),
        }
    }
}

/// Sizes and places of the scratch devices.
#[derive(Clone, Debug)]
pub struct LabSettings {
    /// Parent directory of the disk files (must support O_DIRECT).
    pub dir: PathBuf,
    /// Size of each disk or memory-backed file.
    pub device_size: u64,
    /// Size of each emulated namespace.
    pub emu_size: u64,
    /// Bandwidth cap of each capped emulated namespace, bytes per second.
    pub emu_bandwidth: u64,
    /// Most devices of one kind used by any point.
    pub max_devices: usize,
}

/// The scratch devices of a whole benchmark run.
pub struct Lab {
    // Field order is drop order: loop devices go before their backing files.
    loops: BTreeMap<Kind, Vec<LoopDevice>>,
    disk_files: Vec<PathBuf>,
    ram_files: Vec<PathBuf>,
    _disk_dir: Option<tempfile::TempDir>,
    _ram_dir: Option<tempfile::TempDir>,
    unavailable: BTreeMap<Kind, String>,
    settings: LabSettings,
}

impl Lab {
    /// Makes the devices of every kind in `kinds`; a kind that cannot be made here (no root,
    /// no losetup) is recorded with the reason and skipped.
    pub fn new(settings: LabSettings, kinds: &[Kind], say: &mut dyn FnMut(&str)) -> Result<Lab> {
        let mut lab = Lab {
            loops: BTreeMap::new(),
            disk_files: Vec::new(),
            ram_files: Vec::new(),
            _disk_dir: None,
            _ram_dir: None,
            unavailable: BTreeMap::new(),
            settings,
        };
        let n = lab.settings.max_devices;
        let size = lab.settings.device_size;
        for &kind in kinds {
            if let Err(reason) = loop_support(kind) {
                say(&format!("skipping {} devices: {reason}", kind.name()));
                lab.unavailable.insert(kind, reason);
            }
        }
        let wants = |k: &[Kind]| kinds.iter().any(|kind| k.contains(kind));
        if wants(&[Kind::File, Kind::Loop]) {
            say(&format!(
                "writing {n} scratch files of {} on the disk",
                format_size(size)
            ));
            let dir = tempfile::Builder::new()
                .prefix("stripefs-bench-")
                .tempdir_in(&lab.settings.dir)
                .with_context(|| format!("scratch dir in {}", lab.settings.dir.display()))?;
            lab.disk_files = make_files(dir.path(), n, size)?;
            lab._disk_dir = Some(dir);
        }
        if wants(&[Kind::RamLoop]) && lab.available(Kind::RamLoop) {
            say(&format!(
                "writing {n} files of {} in /dev/shm",
                format_size(size)
            ));
            let dir = tempfile::Builder::new()
                .prefix("stripefs-bench-")
                .tempdir_in("/dev/shm")
                .context("scratch dir in /dev/shm")?;
            lab.ram_files = make_files(dir.path(), n, size)?;
            lab._ram_dir = Some(dir);
        }
        lab.attach_loops(kinds, say)?;
        Ok(lab)
    }

    fn attach_loops(&mut self, kinds: &[Kind], say: &mut dyn FnMut(&str)) -> Result<()> {
        for (kind, files, direct) in [
            (Kind::Loop, self.disk_files.clone(), true),
            (Kind::RamLoop, self.ram_files.clone(), false),
        ] {
            if !kinds.contains(&kind) || !self.available(kind) {
                continue;
            }
            let mut loops = Vec::with_capacity(files.len());
            for file in &files {
                loops.push(LoopDevice::attach(file, direct)?);
            }
            let names: Vec<_> = loops.iter().map(|l| l.path.display().to_string()).collect();
            say(&format!("{}: {}", kind.name(), names.join(" ")));
            self.loops.insert(kind, loops);
        }
        Ok(())
    }

    /// Whether devices of `kind` exist in this lab.
    pub fn available(&self, kind: Kind) -> bool {
        !self.unavailable.contains_key(&kind)
    }

    /// The first `count` devices of `kind`.
    pub fn target(&self, kind: Kind, count: usize) -> Result<Target, String> {
        if let Some(reason) = self.unavailable.get(&kind) {
            return Err(reason.clone());
        }
        let s = &self.settings;
        let paths = |all: &[PathBuf]| -> Result<Devices, String> {
            if all.len() < count {
                return Err(format!("only {} {} devices made", all.len(), kind.name()));
            }
            Ok(Devices::Paths(all[..count].to_vec()))
        };
        let loops = |k| -> Vec<PathBuf> {
            self.loops
                .get(&k)
                .map(|l| l.iter().map(|d| d.path.clone()).collect())
                .unwrap_or_default()
        };
        let emu = |extra: &str| {
            Devices::Emulated(vec![format!("emu:mem,size={}{extra}", s.emu_size); count])
        };
        let (devices, device_size) = match kind {
            Kind::File => (paths(&self.disk_files)?, s.device_size),
            Kind::Loop => (paths(&loops(Kind::Loop))?, s.device_size),
            Kind::RamLoop => (paths(&loops(Kind::RamLoop))?, s.device_size),
            Kind::EmuMem => (emu(""), s.emu_size),
            Kind::EmuCapped => (emu(&format!(",bw={}", s.emu_bandwidth)), s.emu_size),
        };
        Ok(Target {
            kind,
            devices,
            device_size,
        })
    }
}

/// Whether loop devices can be made for `kind` here.
fn loop_support(kind: Kind) -> Result<(), String> {
    if kind.needs_root() {
        loops_available()
    } else {
        Ok(())
    }
}

/// Whether this process can make loop devices (root, and losetup installed).
pub fn loops_available() -> Result<(), String> {
    if !is_root() {
        return Err("loop devices need root (losetup)".into());
    }
    match Command::new("losetup").arg("--version").output() {
        Ok(out) if out.status.success() => Ok(()),
        _ => Err("losetup not found (apt-get install -y mount)".into()),
    }
}

/// Whether this process runs as root.
pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// Waits (up to `limit`) until no one holds the block devices among `paths` exclusively.
/// stripefs opens block devices with `O_EXCL` and registers them with its io_uring rings;
/// the kernel releases a ring's files, and so the exclusive claim, asynchronously after the
/// ring is closed, so a device closed a moment ago can still be busy. Files are skipped.
pub fn wait_until_free(paths: &[PathBuf], limit: std::time::Duration) -> Result<()> {
    use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
    let start = std::time::Instant::now();
    for path in paths {
        let block = std::fs::metadata(path).is_ok_and(|m| m.file_type().is_block_device());
        if !block {
            continue;
        }
        loop {
            let opened = std::fs::OpenOptions::new()
                .read(true)
                .custom_flags(libc::O_EXCL)
                .open(path);
            match opened {
                Ok(_) => break,
                Err(e) if e.raw_os_error() == Some(libc::EBUSY) && start.elapsed() < limit => {
                    std::thread::sleep(std::time::Duration::from_millis(5));
                }
                Err(e) => {
                    return Err(e)
                        .with_context(|| format!("waiting for {} to be free", path.display()));
                }
            }
        }
    }
    Ok(())
}

/// Creates `n` files of `size` bytes filled with a non-zero pattern (holes would read without
/// touching the disk), flushed and dropped from the page cache.
fn make_files(dir: &Path, n: usize, size: u64) -> Result<Vec<PathBuf>> {
    let chunk = 1usize << 20;
    let mut block = vec![0u8; chunk];
    (0..n)
        .map(|i| {
            let path = dir.join(format!("dev{i}.img"));
            let mut file = std::fs::File::create(&path)
                .with_context(|| format!("creating {}", path.display()))?;
            let mut written = 0u64;
            while written < size {
                let len = (size - written).min(chunk as u64) as usize;
                stripefs_engine::pattern::fill(i as u64 + 1, written, &mut block[..len]);
                file.write_all(&block[..len])
                    .with_context(|| format!("writing {}", path.display()))?;
                written += len as u64;
            }
            file.sync_all()
                .with_context(|| format!("flushing {}", path.display()))?;
            drop_cache(&file);
            Ok(path)
        })
        .collect()
}

fn drop_cache(file: &std::fs::File) {
    use std::os::fd::AsRawFd;
    // SAFETY: advice on an open descriptor; no memory is involved.
    unsafe { libc::posix_fadvise(file.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
}

/// A loop device attached to a file, detached on drop.
pub struct LoopDevice {
    path: PathBuf,
}

impl LoopDevice {
    /// `losetup --find --show --direct-io=on|off FILE`.
    pub fn attach(file: &Path, direct: bool) -> Result<LoopDevice> {
        let dio = if direct {
            "--direct-io=on"
        } else {
            "--direct-io=off"
        };
        let out = Command::new("losetup")
            .args(["--find", "--show", dio])
            .arg(file)
            .output()
            .context("running losetup")?;
        if !out.status.success() {
            bail!(
                "losetup {dio} {} failed: {}",
                file.display(),
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        let path = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
        if !path.starts_with("/dev/") {
            bail!("losetup printed no device for {}", file.display());
        }
        Ok(LoopDevice { path })
    }
}

impl Drop for LoopDevice {
    fn drop(&mut self) {
        let detached = Command::new("losetup").arg("-d").arg(&self.path).status();
        if !matches!(detached, Ok(s) if s.success()) {
            eprintln!(
                "stripefs bench: could not detach {} (losetup -d {} by hand)",
                self.path.display(),
                self.path.display()
            );
        }
    }
}

/// A compact size for labels: 4K, 128K, 1M.
pub fn short_size(bytes: u64) -> String {
    match bytes {
        b if b >= 1 << 30 && b % (1 << 30) == 0 => format!("{}G", b >> 30),
        b if b >= 1 << 20 && b % (1 << 20) == 0 => format!("{}M", b >> 20),
        b if b >= 1 << 10 && b % (1 << 10) == 0 => format!("{}K", b >> 10),
        b => b.to_string(),
    }
}
