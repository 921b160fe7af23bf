//! Device specs: how a device is named on the command line.
//!
//! A spec is either a path (`/dev/loop3`, `/tmp/d0.img`) or an emulated NVMe device:
//!
//! ```text
//! emu:BACKING[,KEY=VALUE|,FLAG]...
//! BACKING   mem | a path (use `./mem` for a file called `mem`; paths cannot hold `,`)
//! size=1G   size of the device; creates or extends the backing file; required for mem
//! lba=4096  logical block size, 512 or 4096 (default 4096)
//! mdts=128K largest transfer in bytes, a multiple of lba (default 128K)
//! qd=64     queue depth, 1..=4096 (default 64)
//! bw=500M   bandwidth cap in bytes per second (default none)
//! lat=20us  added latency per command, in ns, us, ms or s (default 0)
//! fail=S-E  commands touching bytes S..E fail; lba-aligned; may repeat
//! fail_after=N  every command after the first N fails
//! hang=N    the device hangs after N commands: later ones never complete on their own
//! short=4K  every command transfers at most this much and answers short (the engine
//!           resubmits the rest); a multiple of lba
//! timeout=30s  a command unanswered this long fails its request and is cancelled
//!           (default 30s, at least 1ms)
//! offline   the device starts offline
//! wcache=on a volatile write cache, on or off (default off): a completed write is not
//!           durable until the next flush, and `DeviceQueue::power_cut` can lose it
//! ```
//!
//! Sizes are integers with an optional 1024-based suffix `K`, `M`, `G` or `T`, optionally
//! followed by `B` or `iB` (`64K`, `64KB`, `64KiB`). Parsing is pure: nothing here opens or
//! creates a file.

use std::collections::HashSet;
use std::fmt;
use std::ops::Range;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

/// How a device is named on the command line: a path (`/dev/loop3`, `/tmp/d0.img`) or an
/// emulated NVMe spec (`emu:...`).
///
/// Parses with [`FromStr`]; [`Display`](fmt::Display) writes a spec that parses back to the
/// same value (for every value that parsing can produce).
#[derive(Clone, Debug, PartialEq)]
pub enum DeviceSpec {
    /// A block device or a regular file, used as it is.
    Path(PathBuf),
    /// An emulated NVMe device with the given geometry, limits and faults.
    Emulated(EmulatedSpec),
}

/// The settings of one emulated NVMe device; see the [module docs](self) for the syntax.
#[derive(Clone, Debug, PartialEq)]
pub struct EmulatedSpec {
    /// Where the device's bytes live.
    pub backing: Backing,
    /// Device size in bytes: the backing file is created or extended to it. Required for
    /// [`Backing::Memory`]; for a file, `None` means the file's current size.
    pub size: Option<u64>,
    /// Logical block size: 512 or 4096.
    pub lba: u32,
    /// Largest transfer one command may carry, in bytes (NVMe MDTS); a multiple of `lba`.
    pub mdts: u64,
    /// Commands the device accepts at once, `1..=`[`Self::MAX_QUEUE_DEPTH`].
    pub queue_depth: u32,
    /// Bandwidth cap in bytes per second; `None` means uncapped.
    pub bandwidth: Option<u64>,
    /// Latency added to every command.
    pub latency: Duration,
    /// Byte ranges whose commands fail (injected media errors), each lba-aligned.
    pub fail_ranges: Vec<Range<u64>>,
    /// After this many commands, every command fails.
    pub fail_after: Option<u64>,
    /// After this many commands, the device hangs: every later command never completes on
    /// its own (its request fails when `timeout` passes).
    pub hang_after: Option<u64>,
    /// Every command transfers at most this many bytes (a multiple of `lba`) and completes
    /// short; the engine resubmits the rest.
    pub short: Option<u64>,
    /// How long a command may go unanswered before its request fails.
    pub timeout: Duration,
    /// The device starts offline.
    pub offline: bool,
    /// The device has a volatile write cache (`wcache=on`): completed writes are readable at
    /// once but durable only after a flush, so a simulated power cut
    /// ([`DeviceQueue::power_cut`](crate::DeviceQueue::power_cut)) can lose or tear them.
    pub write_cache: bool,
}

/// Where an emulated device keeps its bytes.
#[derive(Clone, Debug, PartialEq)]
pub enum Backing {
    /// A regular file (`emu:/path/file.img`).
    File(PathBuf),
    /// Anonymous memory (`emu:mem`), gone when the device is.
    Memory,
}

/// Why a device spec, size or duration was refused.
///
/// Each variant carries the whole spec and the offending key and value, so the message
/// alone tells the user what to fix.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SpecError {
    /// A size that is not a number, has an unknown suffix, or overflows 64 bits.
    #[error("bad size `{value}`: {reason}")]
    BadSize {
        /// The refused text.
        value: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A duration that is not a number with a unit, or overflows.
    #[error("bad duration `{value}`: {reason}")]
    BadDuration {
        /// The refused text.
        value: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The spec names no path (an empty spec, or `emu:` with nothing after it).
    #[error("device spec `{spec}`: empty path")]
    EmptyPath {
        /// The whole spec.
        spec: String,
    },
    /// A key this parser does not know.
    #[error(
        "emulated device spec `{spec}`: unknown key `{key}` \
         (known: size, lba, mdts, qd, bw, lat, fail, fail_after, hang, short, timeout, offline, wcache)"
    )]
    UnknownKey {
        /// The whole spec.
        spec: String,
        /// The unknown key.
        key: String,
    },
    /// A key given twice (only `fail` may repeat).
    #[error("emulated device spec `{spec}`: `{key}` given more than once")]
    DuplicateKey {
        /// The whole spec.
        spec: String,
        /// The repeated key.
        key: String,
    },
    /// A key that needs `=VALUE` given without one.
    #[error("emulated device spec `{spec}`: `{key}` needs a value (`{key}=...`)")]
    MissingValue {
        /// The whole spec.
        spec: String,
        /// The key without a value.
        key: String,
    },
    /// A flag (`offline`) given a value.
    #[error("emulated device spec `{spec}`: `{key}` is a flag and takes no value, got `{value}`")]
    UnexpectedValue {
        /// The whole spec.
        spec: String,
        /// The flag.
        key: String,
        /// The value it was given.
        value: String,
    },
    /// A value that does not parse as what its key expects.
    #[error("emulated device spec `{spec}`: bad {key} `{value}`: {reason}")]
    BadValue {
        /// The whole spec.
        spec: String,
        /// The key.
        key: String,
        /// The refused value.
        value: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A logical block size other than 512 or 4096.
    #[error("emulated device spec `{spec}`: lba must be 512 or 4096, got {lba}")]
    BadLba {
        /// The whole spec.
        spec: String,
        /// The refused block size.
        lba: u64,
    },
    /// A maximum transfer size that is zero or not a multiple of the block size.
    #[error(
        "emulated device spec `{spec}`: mdts must be a non-zero multiple of lba {lba}, got {mdts}"
    )]
    MdtsNotMultiple {
        /// The whole spec.
        spec: String,
        /// The refused transfer size.
        mdts: u64,
        /// The block size in force.
        lba: u32,
    },
    /// A device size that is zero or not a multiple of the block size.
    #[error(
        "emulated device spec `{spec}`: size must be a non-zero multiple of lba {lba}, got {size}"
    )]
    SizeNotMultiple {
        /// The whole spec.
        spec: String,
        /// The refused size.
        size: u64,
        /// The block size in force.
        lba: u32,
    },
    /// `emu:mem` without `size=`: memory has no size of its own.
    #[error("emulated device spec `{spec}`: a memory-backed device needs size=...")]
    MemWithoutSize {
        /// The whole spec.
        spec: String,
    },
    /// A queue depth outside `1..=4096`.
    #[error("emulated device spec `{spec}`: qd must be 1..={max}, got {qd}")]
    QueueDepthOutOfRange {
        /// The whole spec.
        spec: String,
        /// The refused queue depth.
        qd: u64,
        /// The largest queue depth accepted.
        max: u32,
    },
    /// A short-transfer size that is zero or not a multiple of the block size.
    #[error(
        "emulated device spec `{spec}`: short must be a non-zero multiple of lba {lba}, got {short}"
    )]
    ShortNotMultiple {
        /// The whole spec.
        spec: String,
        /// The refused size.
        short: u64,
        /// The block size in force.
        lba: u32,
    },
    /// A command timeout below [`EmulatedSpec::MIN_TIMEOUT`].
    #[error("emulated device spec `{spec}`: timeout must be at least 1ms, got {timeout:?}")]
    TimeoutTooShort {
        /// The whole spec.
        spec: String,
        /// The refused timeout.
        timeout: Duration,
    },
    /// A fail range whose start is not below its end.
    #[error("emulated device spec `{spec}`: fail range {start}-{end} is empty (start >= end)")]
    EmptyFailRange {
        /// The whole spec.
        spec: String,
        /// Start of the refused range.
        start: u64,
        /// End of the refused range.
        end: u64,
    },
    /// A fail range whose ends are not multiples of the block size.
    #[error("emulated device spec `{spec}`: fail range {start}-{end} is not aligned to lba {lba}")]
    MisalignedFailRange {
        /// The whole spec.
        spec: String,
        /// Start of the refused range.
        start: u64,
        /// End of the refused range.
        end: u64,
        /// The block size in force.
        lba: u32,
    },
}

/// Parses a byte count: digits with an optional 1024-based suffix (`4096`, `64K`, `1G`,
/// `2TiB`). Integers only; a result past `u64::MAX` is refused.
/// Bytes in binary units for people: `262144` → `256.0 KiB`.
pub fn format_size(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

pub fn parse_size(s: &str) -> Result<u64, SpecError> {
    size_value(s).map_err(|reason| SpecError::BadSize {
        value: s.to_owned(),
        reason,
    })
}

/// Parses a duration: an integer and a unit, `ns`, `us`, `ms` or `s` (`20us`, `1ms`);
/// a bare `0` is accepted too.
pub fn parse_duration(s: &str) -> Result<Duration, SpecError> {
    duration_value(s).map_err(|reason| SpecError::BadDuration {
        value: s.to_owned(),
        reason,
    })
}

/// [`parse_size`] with the reason alone, so callers can add their own context.
fn size_value(s: &str) -> Result<u64, &'static str> {
    let (digits, suffix) = split_number(s);
    if digits.is_empty() {
        return Err("expected a number of bytes, such as 4096, 64K or 1G");
    }
    let shift = size_shift(suffix).ok_or("unknown suffix (use K, M, G or T, then B or iB)")?;
    let n: u64 = digits.parse().map_err(|_| "too large for 64 bits")?;
    n.checked_mul(1 << shift).ok_or("too large for 64 bits")
}

/// The power of two a size suffix stands for.
fn size_shift(suffix: &str) -> Option<u32> {
    match suffix.to_ascii_uppercase().as_str() {
        "" | "B" => Some(0),
        "K" | "KB" | "KIB" => Some(10),
        "M" | "MB" | "MIB" => Some(20),
        "G" | "GB" | "GIB" => Some(30),
        "T" | "TB" | "TIB" => Some(40),
        _ => None,
    }
}

/// [`parse_duration`] with the reason alone.
fn duration_value(s: &str) -> Result<Duration, &'static str> {
    let (digits, unit) = split_number(s);
    if digits.is_empty() {
        return Err("expected a number and a unit, such as 20us or 1ms");
    }
    let n: u64 = digits.parse().map_err(|_| "too large for 64 bits")?;
    match unit {
        "" if n == 0 => Ok(Duration::ZERO),
        "" => Err("missing unit (ns, us, ms or s)"),
        "ns" => Ok(Duration::from_nanos(n)),
        "us" => Ok(Duration::from_micros(n)),
        "ms" => Ok(Duration::from_millis(n)),
        "s" => Ok(Duration::from_secs(n)),
        _ => Err("unknown unit (use ns, us, ms or s)"),
    }
}

/// Splits leading ASCII digits from the rest.
fn split_number(s: &str) -> (&str, &str) {
    let end = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    s.split_at(end)
}

/// A plain integer (no suffix), such as a queue depth or a command count.
fn count_value(s: &str) -> Result<u64, &'static str> {
    let (digits, rest) = split_number(s);
    if digits.is_empty() || !rest.is_empty() {
        return Err("expected a whole number");
    }
    digits.parse().map_err(|_| "too large for 64 bits")
}

/// A bandwidth: a size that is not zero.
fn bandwidth_value(s: &str) -> Result<u64, &'static str> {
    match size_value(s)? {
        0 => Err("bandwidth must be above zero"),
        n => Ok(n),
    }
}

/// A switch: `on` or `off`.
fn switch_value(s: &str) -> Result<bool, &'static str> {
    match s {
        "on" => Ok(true),
        "off" => Ok(false),
        _ => Err("expected on or off"),
    }
}

/// A fail range `START-END`, both sizes.
fn range_value(s: &str) -> Result<Range<u64>, &'static str> {
    let (start, end) = s
        .split_once('-')
        .ok_or("expected START-END, such as 0-64K")?;
    Ok(size_value(start)?..size_value(end)?)
}

/// Writes a size with the largest suffix that keeps it exact (`1G`, `12K`, `1000`).
fn fmt_size(n: u64) -> String {
    let suffixes = [(40, "T"), (30, "G"), (20, "M"), (10, "K")];
    match suffixes
        .iter()
        .find(|(shift, _)| n != 0 && n.is_multiple_of(1u64 << shift))
    {
        Some((shift, suffix)) => format!("{}{suffix}", n >> shift),
        None => n.to_string(),
    }
}

/// Writes a duration with the largest unit that keeps it exact (`1s`, `20us`, `7ns`).
fn fmt_duration(d: Duration) -> String {
    let nanos = d.as_nanos();
    let units = [(1_000_000_000, "s"), (1_000_000, "ms"), (1_000, "us")];
    match units.iter().find(|(per, _)| nanos.is_multiple_of(*per)) {
        Some((per, unit)) => format!("{}{unit}", nanos / per),
        None => format!("{nanos}ns"),
    }
}

impl EmulatedSpec {
    /// The logical block size when `lba=` is not given.
    pub const DEFAULT_LBA: u32 = 4096;
    /// The maximum transfer size when `mdts=` is not given: 128 KiB.
    pub const DEFAULT_MDTS: u64 = 128 << 10;
    /// The queue depth when `qd=` is not given.
    pub const DEFAULT_QUEUE_DEPTH: u32 = 64;
    /// The largest queue depth accepted.
    pub const MAX_QUEUE_DEPTH: u32 = 4096;
    /// The command timeout when `timeout=` is not given (of every device: paths get it
    /// through `QueueOptions`): long enough for any healthy device under load, short enough
    /// that a device that stops answering does not hang its users.
    pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);
    /// The shortest command timeout accepted.
    pub const MIN_TIMEOUT: Duration = Duration::from_millis(1);
    /// The keys a spec may hold.
    const KEYS: [&'static str; 13] = [
        "size",
        "lba",
        "mdts",
        "qd",
        "bw",
        "lat",
        "fail",
        "fail_after",
        "hang",
        "short",
        "timeout",
        "offline",
        "wcache",
    ];

    /// A device on `backing` with every setting at its default (no size, no faults).
    pub fn new(backing: Backing) -> Self {
        Self {
            backing,
            size: None,
            lba: Self::DEFAULT_LBA,
            mdts: Self::DEFAULT_MDTS,
            queue_depth: Self::DEFAULT_QUEUE_DEPTH,
            bandwidth: None,
            latency: Duration::ZERO,
            fail_ranges: Vec::new(),
            fail_after: None,
            hang_after: None,
            short: None,
            timeout: Self::DEFAULT_TIMEOUT,
            offline: false,
            write_cache: false,
        }
    }

    /// Checks the rules that tie settings together (block size, transfer size, device
    /// size, queue depth, fail ranges), for a spec built in code rather than parsed.
    pub fn validate(&self) -> Result<(), SpecError> {
        self.check(&format!("{self}"))
    }

    /// Parses the part after `emu:`; `spec` is the whole text, for error messages.
    fn parse(spec: &str, rest: &str) -> Result<Self, SpecError> {
        let mut items = rest.split(',');
        let backing = match items.next().unwrap_or_default() {
            "" => return Err(SpecError::EmptyPath { spec: spec.into() }),
            "mem" => Backing::Memory,
            path => Backing::File(PathBuf::from(path)),
        };
        let mut parsed = Self::new(backing);
        let mut seen = HashSet::new();
        for item in items {
            let (key, value) = match item.split_once('=') {
                Some((key, value)) => (key, Some(value)),
                None => (item, None),
            };
            Self::check_key(spec, key, &mut seen)?;
            parsed.apply(&Item { spec, key, value })?;
        }
        parsed.check(spec)?;
        Ok(parsed)
    }

    /// Refuses an unknown key, or a repeated key other than `fail`.
    fn check_key<'s>(
        spec: &str,
        key: &'s str,
        seen: &mut HashSet<&'s str>,
    ) -> Result<(), SpecError> {
        if !Self::KEYS.contains(&key) {
            return Err(SpecError::UnknownKey {
                spec: spec.into(),
                key: key.into(),
            });
        }
        if key != "fail" && !seen.insert(key) {
            return Err(SpecError::DuplicateKey {
                spec: spec.into(),
                key: key.into(),
            });
        }
        Ok(())
    }

    /// Sets the field that one known `key[=value]` item names.
    fn apply(&mut self, item: &Item<'_>) -> Result<(), SpecError> {
        match item.key {
            "size" => self.size = Some(item.value(size_value)?),
            "lba" => self.lba = item.lba()?,
            "mdts" => self.mdts = item.value(size_value)?,
            "qd" => self.queue_depth = item.queue_depth()?,
            "bw" => self.bandwidth = Some(item.value(bandwidth_value)?),
            "lat" => self.latency = item.value(duration_value)?,
            "fail" => self.fail_ranges.push(item.value(range_value)?),
            "fail_after" => self.fail_after = Some(item.value(count_value)?),
            "hang" => self.hang_after = Some(item.value(count_value)?),
            "short" => self.short = Some(item.value(size_value)?),
            "timeout" => self.timeout = item.value(duration_value)?,
            "offline" => self.offline = item.flag()?,
            "wcache" => self.write_cache = item.value(switch_value)?,
            key => {
                return Err(SpecError::UnknownKey {
                    spec: item.spec.into(),
                    key: key.into(),
                });
            }
        }
        Ok(())
    }

    /// Checks the cross-field rules, naming `spec` in errors.
    fn check(&self, spec: &str) -> Result<(), SpecError> {
        let lba = self.lba;
        if lba != 512 && lba != 4096 {
            return Err(SpecError::BadLba {
                spec: spec.into(),
                lba: lba.into(),
            });
        }
        if self.mdts == 0 || !self.mdts.is_multiple_of(u64::from(lba)) {
            return Err(SpecError::MdtsNotMultiple {
                spec: spec.into(),
                mdts: self.mdts,
                lba,
            });
        }
        self.check_size(spec)?;
        if !(1..=Self::MAX_QUEUE_DEPTH).contains(&self.queue_depth) {
            return Err(queue_depth_error(spec, self.queue_depth.into()));
        }
        self.check_bounded(spec)?;
        self.fail_ranges
            .iter()
            .try_for_each(|range| self.check_fail_range(spec, range))
    }

    /// The device size, if given, is a non-zero multiple of the block size; memory needs one.
    fn check_size(&self, spec: &str) -> Result<(), SpecError> {
        match self.size {
            None if self.backing == Backing::Memory => {
                Err(SpecError::MemWithoutSize { spec: spec.into() })
            }
            Some(size) if size == 0 || !size.is_multiple_of(u64::from(self.lba)) => {
                Err(SpecError::SizeNotMultiple {
                    spec: spec.into(),
                    size,
                    lba: self.lba,
                })
            }
            _ => Ok(()),
        }
    }

    /// A short-transfer size is a non-zero multiple of the block size; a timeout is at
    /// least [`Self::MIN_TIMEOUT`].
    fn check_bounded(&self, spec: &str) -> Result<(), SpecError> {
        if let Some(short) = self.short
            && (short == 0 || !short.is_multiple_of(u64::from(self.lba)))
        {
            return Err(SpecError::ShortNotMultiple {
                spec: spec.into(),
                short,
                lba: self.lba,
            });
        }
        if self.timeout < Self::MIN_TIMEOUT {
            return Err(SpecError::TimeoutTooShort {
                spec: spec.into(),
                timeout: self.timeout,
            });
        }
        Ok(())
    }

    /// A fail range is non-empty and lba-aligned at both ends.
    fn check_fail_range(&self, spec: &str, range: &Range<u64>) -> Result<(), SpecError> {
        let (start, end) = (range.start, range.end);
        if start >= end {
            return Err(SpecError::EmptyFailRange {
                spec: spec.into(),
                start,
                end,
            });
        }
        let lba = u64::from(self.lba);
        if !start.is_multiple_of(lba) || !end.is_multiple_of(lba) {
            return Err(SpecError::MisalignedFailRange {
                spec: spec.into(),
                start,
                end,
                lba: self.lba,
            });
        }
        Ok(())
    }
}

/// The queue-depth error, shared by parsing and [`EmulatedSpec::validate`].
fn queue_depth_error(spec: &str, qd: u64) -> SpecError {
    SpecError::QueueDepthOutOfRange {
        spec: spec.into(),
        qd,
        max: EmulatedSpec::MAX_QUEUE_DEPTH,
    }
}

/// One `key[=value]` item of a spec, with the whole spec for error messages.
struct Item<'a> {
    spec: &'a str,
    key: &'a str,
    value: Option<&'a str>,
}

impl Item<'_> {
    /// The value parsed by `parse`, or an error naming the key, the value and the reason.
    fn value<T>(&self, parse: fn(&str) -> Result<T, &'static str>) -> Result<T, SpecError> {
        let value = self.value.ok_or_else(|| SpecError::MissingValue {
            spec: self.spec.into(),
            key: self.key.into(),
        })?;
        parse(value).map_err(|reason| SpecError::BadValue {
            spec: self.spec.into(),
            key: self.key.into(),
            value: value.into(),
            reason,
        })
    }

    /// A block size: 512 or 4096 (a suffix such as `4K` is allowed).
    fn lba(&self) -> Result<u32, SpecError> {
        let lba = self.value(size_value)?;
        match lba {
            512 | 4096 => Ok(lba as u32),
            _ => Err(SpecError::BadLba {
                spec: self.spec.into(),
                lba,
            }),
        }
    }

    /// A queue depth in `1..=MAX_QUEUE_DEPTH`.
    fn queue_depth(&self) -> Result<u32, SpecError> {
        let qd = self.value(count_value)?;
        u32::try_from(qd)
            .ok()
            .filter(|qd| (1..=EmulatedSpec::MAX_QUEUE_DEPTH).contains(qd))
            .ok_or_else(|| queue_depth_error(self.spec, qd))
    }

    /// A flag: present means `true`, and it takes no value.
    fn flag(&self) -> Result<bool, SpecError> {
        match self.value {
            None => Ok(true),
            Some(value) => Err(SpecError::UnexpectedValue {
                spec: self.spec.into(),
                key: self.key.into(),
                value: value.into(),
            }),
        }
    }
}

impl FromStr for DeviceSpec {
    type Err = SpecError;

    /// `emu:...` is an emulated device; anything else non-empty is a path.
    fn from_str(s: &str) -> Result<Self, SpecError> {
        match s.strip_prefix("emu:") {
            Some(rest) => EmulatedSpec::parse(s, rest).map(Self::Emulated),
            None if s.is_empty() => Err(SpecError::EmptyPath { spec: s.into() }),
            None => Ok(Self::Path(PathBuf::from(s))),
        }
    }
}

impl fmt::Display for DeviceSpec {
    /// Writes the spec back in the form [`FromStr`] reads.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Path(path) => write!(f, "{}", path.display()),
            Self::Emulated(spec) => spec.fmt(f),
        }
    }
}

impl fmt::Display for EmulatedSpec {
    /// Writes `emu:BACKING` and every setting that differs from its default.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.backing {
            Backing::Memory => write!(f, "emu:mem")?,
            Backing::File(path) => write!(f, "emu:{}", path.display())?,
        }
        if let Some(size) = self.size {
            write!(f, ",size={}", fmt_size(size))?;
        }
        if self.lba != Self::DEFAULT_LBA {
            write!(f, ",lba={}", self.lba)?;
        }
        if self.mdts != Self::DEFAULT_MDTS {
            write!(f, ",mdts={}", fmt_size(self.mdts))?;
        }
        if self.queue_depth != Self::DEFAULT_QUEUE_DEPTH {
            write!(f, ",qd={}", self.queue_depth)?;
        }
        self.fmt_faults(f)
    }
}

impl EmulatedSpec {
    /// Writes the performance and fault settings that differ from their defaults.
    fn fmt_faults(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(bw) = self.bandwidth {
            write!(f, ",bw={}", fmt_size(bw))?;
        }
        if !self.latency.is_zero() {
            write!(f, ",lat={}", fmt_duration(self.latency))?;
        }
        for range in &self.fail_ranges {
            write!(f, ",fail={}-{}", fmt_size(range.start), fmt_size(range.end))?;
        }
        if let Some(n) = self.fail_after {
            write!(f, ",fail_after={n}")?;
        }
        if let Some(n) = self.hang_after {
            write!(f, ",hang={n}")?;
        }
        if let Some(short) = self.short {
            write!(f, ",short={}", fmt_size(short))?;
        }
        if self.timeout != Self::DEFAULT_TIMEOUT {
            write!(f, ",timeout={}", fmt_duration(self.timeout))?;
        }
        if self.offline {
            write!(f, ",offline")?;
        }
        if self.write_cache {
            write!(f, ",wcache=on")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn emu(s: &str) -> EmulatedSpec {
        match s.parse::<DeviceSpec>() {
            Ok(DeviceSpec::Emulated(spec)) => spec,
            other => panic!("`{s}` should parse as emulated, got {other:?}"),
        }
    }

    fn err(s: &str) -> SpecError {
        match s.parse::<DeviceSpec>() {
            Err(e) => e,
            Ok(spec) => panic!("`{s}` should be refused, got {spec:?}"),
        }
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("4096"), Ok(4096));
        assert_eq!(parse_size("0"), Ok(0));
        assert_eq!(parse_size("64K"), Ok(64 << 10));
        assert_eq!(parse_size("64k"), Ok(64 << 10));
        assert_eq!(parse_size("64KB"), Ok(64 << 10));
        assert_eq!(parse_size("64KiB"), Ok(64 << 10));
        assert_eq!(parse_size("500M"), Ok(500 << 20));
        assert_eq!(parse_size("1G"), Ok(1 << 30));
        assert_eq!(parse_size("2T"), Ok(2 << 40));
        assert_eq!(parse_size("512B"), Ok(512));
        assert_eq!(parse_size("16777215T"), Ok(16_777_215 << 40));
        for bad in [
            "",
            "K",
            "1.5M",
            "-1",
            "12Q",
            "1 G",
            "16777216T",
            "99999999999999999999",
        ] {
            assert!(
                matches!(parse_size(bad), Err(SpecError::BadSize { .. })),
                "`{bad}`"
            );
        }
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("0"), Ok(Duration::ZERO));
        assert_eq!(parse_duration("7ns"), Ok(Duration::from_nanos(7)));
        assert_eq!(parse_duration("20us"), Ok(Duration::from_micros(20)));
        assert_eq!(parse_duration("3ms"), Ok(Duration::from_millis(3)));
        assert_eq!(parse_duration("2s"), Ok(Duration::from_secs(2)));
        for bad in ["", "20", "us", "1.5ms", "5m", "5min", "-1s"] {
            assert!(
                matches!(parse_duration(bad), Err(SpecError::BadDuration { .. })),
                "`{bad}`"
            );
        }
    }

    #[test]
    fn paths() {
        let spec: DeviceSpec = "/dev/loop3".parse().expect("a path");
        assert_eq!(spec, DeviceSpec::Path("/dev/loop3".into()));
        assert_eq!(spec.to_string(), "/dev/loop3");
        assert_eq!(
            "d0.img".parse::<DeviceSpec>(),
            Ok(DeviceSpec::Path("d0.img".into()))
        );
        assert_eq!(err(""), SpecError::EmptyPath { spec: "".into() });
    }

    #[test]
    fn emulated_defaults() {
        let spec = emu("emu:/tmp/d0.img");
        assert_eq!(spec, EmulatedSpec::new(Backing::File("/tmp/d0.img".into())));
        assert_eq!(spec.lba, 4096);
        assert_eq!(spec.mdts, 128 << 10);
        assert_eq!(spec.queue_depth, 64);
        assert_eq!(spec.latency, Duration::ZERO);
        assert_eq!(spec.to_string(), "emu:/tmp/d0.img");
    }

    #[test]
    fn emulated_every_key() {
        let text = "emu:mem,size=1G,lba=512,mdts=64K,qd=8,bw=500M,lat=20us,\
                    fail=0-4K,fail=1M-2M,fail_after=1000,hang=7,short=4K,timeout=2s,offline,\
                    wcache=on";
        let spec = emu(text);
        let want = EmulatedSpec {
            backing: Backing::Memory,
            size: Some(1 << 30),
            lba: 512,
            mdts: 64 << 10,
            queue_depth: 8,
            bandwidth: Some(500 << 20),
            latency: Duration::from_micros(20),
            fail_ranges: vec![0..4096, (1 << 20)..(2 << 20)],
            fail_after: Some(1000),
            hang_after: Some(7),
            short: Some(4096),
            timeout: Duration::from_secs(2),
            offline: true,
            write_cache: true,
        };
        assert_eq!(spec, want);
        assert_eq!(spec.to_string(), text);
        assert_eq!(spec.validate(), Ok(()));
    }

    #[test]
    fn errors_name_the_spec_and_value() {
        let e = err("emu:/x,lba=1000");
        assert_eq!(
            e.to_string(),
            "emulated device spec `emu:/x,lba=1000`: lba must be 512 or 4096, got 1000"
        );
        let e = err("emu:/x,qd=lots");
        assert_eq!(
            e.to_string(),
            "emulated device spec `emu:/x,qd=lots`: bad qd `lots`: expected a whole number"
        );
    }

    #[test]
    fn refused_specs() {
        let spec = |s: &str| s.to_string();
        assert_eq!(err("emu:"), SpecError::EmptyPath { spec: spec("emu:") });
        assert_eq!(
            err("emu:,size=1G"),
            SpecError::EmptyPath {
                spec: spec("emu:,size=1G")
            }
        );
        assert_eq!(
            err("emu:/x,speed=1"),
            SpecError::UnknownKey {
                spec: spec("emu:/x,speed=1"),
                key: spec("speed")
            }
        );
        assert_eq!(
            err("emu:/x,"),
            SpecError::UnknownKey {
                spec: spec("emu:/x,"),
                key: spec("")
            }
        );
        assert_eq!(
            err("emu:/x,lba=512,lba=512"),
            SpecError::DuplicateKey {
                spec: spec("emu:/x,lba=512,lba=512"),
                key: spec("lba")
            }
        );
        assert_eq!(
            err("emu:/x,offline,offline"),
            SpecError::DuplicateKey {
                spec: spec("emu:/x,offline,offline"),
                key: spec("offline")
            }
        );
        assert_eq!(
            err("emu:/x,size"),
            SpecError::MissingValue {
                spec: spec("emu:/x,size"),
                key: spec("size")
            }
        );
        assert_eq!(
            err("emu:/x,offline=yes"),
            SpecError::UnexpectedValue {
                spec: spec("emu:/x,offline=yes"),
                key: spec("offline"),
                value: spec("yes")
            }
        );
        assert_eq!(
            err("emu:mem"),
            SpecError::MemWithoutSize {
                spec: spec("emu:mem")
            }
        );
    }

    #[test]
    fn refused_numbers() {
        let bad_value = |s: &str, key: &str| match err(s) {
            SpecError::BadValue { key: k, .. } => assert_eq!(k, key, "{s}"),
            other => panic!("`{s}`: {other:?}"),
        };
        bad_value("emu:/x,size=big", "size");
        bad_value("emu:/x,size=99999999T", "size");
        bad_value("emu:/x,mdts=1.5K", "mdts");
        bad_value("emu:/x,bw=0", "bw");
        bad_value("emu:/x,lat=20", "lat");
        bad_value("emu:/x,fail=4096", "fail");
        bad_value("emu:/x,fail=a-b", "fail");
        bad_value("emu:/x,fail_after=-1", "fail_after");
        bad_value("emu:/x,qd=8K", "qd");
        assert!(matches!(err("emu:/x,lba=4K0"), SpecError::BadValue { .. }));
    }

    #[test]
    fn write_cache_switch() {
        assert!(!emu("emu:/x").write_cache);
        assert!(emu("emu:/x,wcache=on").write_cache);
        assert!(!emu("emu:/x,wcache=off").write_cache);
        assert_eq!(emu("emu:/x,wcache=on").to_string(), "emu:/x,wcache=on");
        assert_eq!(emu("emu:/x,wcache=off").to_string(), "emu:/x");
        assert_eq!(
            err("emu:/x,wcache=yes").to_string(),
            "emulated device spec `emu:/x,wcache=yes`: bad wcache `yes`: expected on or off"
        );
        assert!(matches!(
            err("emu:/x,wcache"),
            SpecError::MissingValue { ref key, .. } if key == "wcache"
        ));
        assert!(matches!(
            err("emu:/x,wcache=on,wcache=off"),
            SpecError::DuplicateKey { ref key, .. } if key == "wcache"
        ));
    }

    #[test]
    fn refused_geometry() {
        assert!(matches!(
            err("emu:/x,mdts=1000"),
            SpecError::MdtsNotMultiple {
                mdts: 1000,
                lba: 4096,
                ..
            }
        ));
        assert!(matches!(
            err("emu:/x,mdts=0"),
            SpecError::MdtsNotMultiple { mdts: 0, .. }
        ));
        assert_eq!(emu("emu:/x,lba=512,mdts=512").mdts, 512);
        assert!(matches!(
            err("emu:/x,size=1000"),
            SpecError::SizeNotMultiple {
                size: 1000,
                lba: 4096,
                ..
            }
        ));
        assert!(matches!(
            err("emu:mem,size=0"),
            SpecError::SizeNotMultiple { size: 0, .. }
        ));
        assert!(matches!(
            err("emu:/x,qd=0"),
            SpecError::QueueDepthOutOfRange {
                qd: 0,
                max: 4096,
                ..
            }
        ));
        assert!(matches!(
            err("emu:/x,qd=4097"),
            SpecError::QueueDepthOutOfRange { qd: 4097, .. }
        ));
        assert!(matches!(
            err("emu:/x,qd=99999999999"),
            SpecError::QueueDepthOutOfRange {
                qd: 99_999_999_999,
                ..
            }
        ));
        assert_eq!(emu("emu:/x,qd=4096").queue_depth, 4096);
    }

    #[test]
    fn refused_short_and_timeout() {
        assert!(matches!(
            err("emu:/x,short=1000"),
            SpecError::ShortNotMultiple {
                short: 1000,
                lba: 4096,
                ..
            }
        ));
        assert!(matches!(
            err("emu:/x,short=0"),
            SpecError::ShortNotMultiple { short: 0, .. }
        ));
        assert_eq!(emu("emu:/x,lba=512,short=512").short, Some(512));
        let e = err("emu:/x,timeout=10us");
        assert_eq!(
            e.to_string(),
            "emulated device spec `emu:/x,timeout=10us`: timeout must be at least 1ms, got 10µs"
        );
        assert!(matches!(
            err("emu:/x,timeout=2"),
            SpecError::BadValue { .. }
        ));
        assert!(matches!(
            err("emu:/x,hang=soon"),
            SpecError::BadValue { .. }
        ));
        assert_eq!(emu("emu:/x,hang=0").hang_after, Some(0));
        assert_eq!(
            emu("emu:/x,timeout=30s").to_string(),
            "emu:/x",
            "the default timeout is not written"
        );
    }

    #[test]
    fn refused_fail_ranges() {
        assert!(matches!(
            err("emu:/x,fail=8K-4K"),
            SpecError::EmptyFailRange {
                start: 8192,
                end: 4096,
                ..
            }
        ));
        assert!(matches!(
            err("emu:/x,fail=4K-4K"),
            SpecError::EmptyFailRange { .. }
        ));
        assert!(matches!(
            err("emu:/x,fail=512-4K"),
            SpecError::MisalignedFailRange {
                start: 512,
                end: 4096,
                lba: 4096,
                ..
            }
        ));
        assert_eq!(
            emu("emu:/x,lba=512,fail=512-1K").fail_ranges,
            vec![512..1024]
        );
    }

    #[test]
    fn validate_checks_built_specs() {
        let mut spec = EmulatedSpec::new(Backing::Memory);
        assert!(matches!(
            spec.validate(),
            Err(SpecError::MemWithoutSize { .. })
        ));
        spec.size = Some(1 << 20);
        assert_eq!(spec.validate(), Ok(()));
        spec.lba = 1000;
        assert!(matches!(
            spec.validate(),
            Err(SpecError::BadLba { lba: 1000, .. })
        ));
    }

    #[test]
    fn display_picks_exact_units() {
        assert_eq!(fmt_size(0), "0");
        assert_eq!(fmt_size(1000), "1000");
        assert_eq!(fmt_size(4096), "4K");
        assert_eq!(fmt_size(3 << 20), "3M");
        assert_eq!(fmt_size(1 << 40), "1T");
        assert_eq!(fmt_duration(Duration::from_secs(2)), "2s");
        assert_eq!(fmt_duration(Duration::from_micros(1500)), "1500us");
        assert_eq!(fmt_duration(Duration::from_nanos(7)), "7ns");
    }

    mod round_trip {
        use super::super::*;
        use proptest::prelude::*;

        fn durations() -> impl Strategy<Value = Duration> {
            prop_oneof![
                Just(Duration::ZERO),
                any::<u64>().prop_map(Duration::from_nanos),
                any::<u32>().prop_map(|n| Duration::from_micros(n.into())),
                any::<u32>().prop_map(|n| Duration::from_millis(n.into())),
                any::<u64>().prop_map(Duration::from_secs),
            ]
        }

        fn backings() -> impl Strategy<Value = Backing> {
            prop_oneof![
                Just(Backing::Memory),
                "/[a-zA-Z0-9_./ -]{0,24}".prop_map(|p| Backing::File(p.into())),
                "[a-z][a-z0-9_.]{0,12}/[a-z0-9]{1,8}".prop_map(|p| Backing::File(p.into())),
            ]
        }

        fn specs() -> impl Strategy<Value = EmulatedSpec> {
            let lbas = prop_oneof![Just(512u32), Just(4096u32)];
            (lbas, backings()).prop_flat_map(|(lba, backing)| {
                let blocks = move |n: u64| n * u64::from(lba);
                let size = prop::option::of((1..(1u64 << 40)).prop_map(blocks));
                let size = if backing == Backing::Memory {
                    (1..(1u64 << 40)).prop_map(move |n| Some(blocks(n))).boxed()
                } else {
                    size.boxed()
                };
                let ranges = prop::collection::vec(
                    (0..(1u64 << 30), 1..(1u64 << 20))
                        .prop_map(move |(s, l)| blocks(s)..blocks(s + l)),
                    0..4,
                );
                (
                    size,
                    (1..=2048u64).prop_map(blocks),
                    1..=EmulatedSpec::MAX_QUEUE_DEPTH,
                    prop::option::of(1..u64::MAX),
                    durations(),
                    ranges,
                    prop::option::of(any::<u64>()),
                    (
                        prop::option::of(any::<u64>()),
                        prop::option::of((1..=2048u64).prop_map(blocks)),
                        durations()
                            .prop_filter("at least 1ms", |d| *d >= EmulatedSpec::MIN_TIMEOUT),
                    ),
                    any::<bool>(),
                    any::<bool>(),
                )
                    .prop_map(
                        move |(size, mdts, qd, bw, lat, fail, after, bounded, offline, wcache)| {
                            let (hang_after, short, timeout) = bounded;
                            EmulatedSpec {
                                backing: backing.clone(),
                                size,
                                lba,
                                mdts,
                                queue_depth: qd,
                                bandwidth: bw,
                                latency: lat,
                                fail_ranges: fail,
                                fail_after: after,
                                hang_after,
                                short,
                                timeout,
                                offline,
                                write_cache: wcache,
                            }
                        },
                    )
            })
        }

        proptest! {
            #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

            #[test]
            fn emulated_specs_round_trip(spec in specs()) {
                prop_assert_eq!(spec.validate(), Ok(()));
                let text = spec.to_string();
                let parsed: DeviceSpec = text.parse().map_err(|e| TestCaseError::fail(format!("{e}")))?;
                prop_assert_eq!(parsed, DeviceSpec::Emulated(spec));
            }

            #[test]
            fn paths_round_trip(path in "[a-zA-Z0-9_./ ,:-]{1,32}") {
                prop_assume!(!path.starts_with("emu:"));
                let spec = DeviceSpec::Path(path.clone().into());
                prop_assert_eq!(spec.to_string().parse::<DeviceSpec>(), Ok(spec));
            }

            #[test]
            fn sizes_round_trip(n in any::<u64>()) {
                prop_assert_eq!(parse_size(&fmt_size(n)), Ok(n));
            }

            #[test]
            fn parsing_never_panics(text in "(emu:)?[a-z0-9=,_./-]{0,40}") {
                let _ = text.parse::<DeviceSpec>();
            }
        }
    }
}
