//! `stripefs mkfs`: writes a new, empty filesystem over a set of devices.

use anyhow::{Context, Result, bail};
use stripefs_engine::DeviceSpec;
use stripefs_engine::spec::format_size;
use stripefs_fs::filesystem::{self, MkfsOptions, hex};

use stripefs_layout::ondisk::Superblock;

use crate::demo::parse_size;
use crate::probe::members::signatures_of;
use crate::probe::signatures::Signature;

/// Settings of mkfs.
#[derive(Debug, clap::Args)]
pub struct MkfsArgs {
    /// Default stripe unit of new files.
    #[arg(long, default_value = "256K", value_parser = parse_size)]
    pub stripe_unit: u64,
    /// Default stripe count of new files (default: every device).
    #[arg(long)]
    pub stripe_count: Option<u32>,
    /// Size of the area for the metadata log and checkpoint tables on each metadata replica
    /// (default: 1/64 of the device, 8 to 256 MiB: each checkpoint table, a quarter of it,
    /// names about size / 60 inodes). The metadata itself grows into free space; a larger log
    /// means fewer checkpoints.
    #[arg(long, value_parser = parse_size)]
    pub metadata_size: Option<u64>,
    /// A name for the filesystem.
    #[arg(long, default_value = "")]
    pub label: String,
    /// Overwrite devices that hold a filesystem (stripefs or other) or a partition table.
    #[arg(short, long)]
    pub force: bool,
    /// Print the layout that would be written (per device: metadata and data areas) and
    /// write nothing.
    #[arg(short = 'n', long)]
    pub dry_run: bool,
    /// The devices, in order (paths or emu: specs). Their contents are lost.
    #[arg(required = true, value_name = "DEV")]
    pub devices: Vec<String>,
}

/// Parses device specs, naming the bad one.
pub fn parse_specs(devices: &[String]) -> Result<Vec<DeviceSpec>> {
    devices
        .iter()
        .map(|d| {
            d.parse::<DeviceSpec>()
                .with_context(|| format!("device `{d}`"))
        })
        .collect()
}

pub fn run(args: &MkfsArgs) -> Result<()> {
    let specs = parse_specs(&args.devices)?;
    let _locks = crate::lock::lock_devices(&specs)?;
    let options = MkfsOptions {
        stripe_unit: args.stripe_unit,
        stripe_count: args.stripe_count,
        metadata_size: args.metadata_size,
        label: args.label.clone(),
    };
    let found = existing_signatures(&specs)?;
    if args.dry_run {
        return dry_run(args, &specs, &options, &found);
    }
    if !found.is_empty() && !args.force {
        bail!("{}; use --force to overwrite", describe(&found));
    }
    let superblocks = filesystem::mkfs(&specs, &options)
        .with_context(|| format!("making a filesystem on {}", args.devices.join(" ")))?;
    print_layout(&superblocks, &args.devices)
}

/// Devices holding something recognizable: each with what it holds. Emulated devices are
/// not looked at.
fn existing_signatures(specs: &[DeviceSpec]) -> Result<Vec<(String, Vec<Signature>)>> {
    let mut found = Vec::new();
    for spec in specs {
        let DeviceSpec::Path(path) = spec else {
            continue;
        };
        let signatures = signatures_of(path)
            .with_context(|| format!("reading {} to see what it holds", path.display()))?;
        if !signatures.is_empty() {
            found.push((path.display().to_string(), signatures));
        }
    }
    Ok(found)
}

/// `DEV appears to contain …; DEV2 appears to contain …`
fn describe(found: &[(String, Vec<Signature>)]) -> String {
    found
        .iter()
        .map(|(device, signatures)| {
            let what = signatures
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(" and ");
            format!("{device} appears to contain an existing {what}")
        })
        .collect::<Vec<_>>()
        .join("; ")
}

fn dry_run(
    args: &MkfsArgs,
    specs: &[DeviceSpec],
    options: &MkfsOptions,
    found: &[(String, Vec<Signature>)],
) -> Result<()> {
    let superblocks = filesystem::mkfs_plan(specs, options)
        .with_context(|| format!("planning a filesystem on {}", args.devices.join(" ")))?;
    println!("dry run: nothing written; mkfs would write:");
    print_layout(&superblocks, &args.devices)?;
    if !found.is_empty() {
        let verdict = if args.force {
            "overwritten (--force)"
        } else {
            "refused without --force"
        };
        println!("{}: {verdict}", describe(found));
    }
    Ok(())
}

/// The filesystem, then per device its areas (offset and length) and sizes.
fn print_layout(superblocks: &[Superblock], devices: &[String]) -> Result<()> {
    let Some(first) = superblocks.first() else {
        bail!("mkfs wrote no superblock");
    };
    let label = if first.label.is_empty() {
        String::new()
    } else {
        format!(" \"{}\"", first.label)
    };
    println!(
        "stripefs {}{label}: {} devices, stripe unit {}, stripe count {}, block size {}",
        hex(&first.fs_uuid),
        first.device_count,
        format_size(u64::from(first.default_stripe_unit)),
        first.default_stripe_count,
        first.block_size
    );
    for (sb, name) in superblocks.iter().zip(devices) {
        let meta = if sb.meta_len > 0 {
            format!(
                ", metadata {} at {}",
                format_size(sb.meta_len),
                format_size(sb.meta_offset)
            )
        } else {
            String::new()
        };
        println!(
            "  #{} {name}: {} used, data {} at {}{meta}",
            sb.device_index,
            format_size(sb.device_size),
            format_size(sb.data_len),
            format_size(sb.data_offset)
        );
    }
    Ok(())
}
