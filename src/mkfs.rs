//! `stripefs mkfs`: writes a new, empty filesystem over a set of devices.

use anyhow::{Context, Result};
use stripefs_engine::DeviceSpec;
use stripefs_engine::spec::format_size;
use stripefs_fs::filesystem::{self, MkfsOptions, hex};

use crate::demo::parse_size;

/// Settings of mkfs.
#[derive(Debug, clap::Args)]
pub struct MkfsArgs {
    /// Default stripe unit of new files.
    #[arg(long, default_value = "256K", value_parser = parse_size)]
    pub stripe_unit: u64,
    /// Default stripe count of new files (default: every device).
    #[arg(long)]
    pub stripe_count: Option<u32>,
    /// Size of the metadata area on each metadata replica (default: a share of the device).
    #[arg(long, value_parser = parse_size)]
    pub metadata_size: Option<u64>,
    /// A name for the filesystem.
    #[arg(long, default_value = "")]
    pub label: String,
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
    let superblocks = filesystem::mkfs(&specs, &options)
        .with_context(|| format!("making a filesystem on {}", args.devices.join(" ")))?;
    let Some(first) = superblocks.first() else {
        anyhow::bail!("mkfs wrote no superblock");
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
    for (sb, name) in superblocks.iter().zip(&args.devices) {
        let meta = if sb.meta_len > 0 {
            format!(", metadata {}", format_size(sb.meta_len))
        } else {
            String::new()
        };
        println!(
            "  #{} {name}: data {}{meta}",
            sb.device_index,
            format_size(sb.data_len)
        );
    }
    Ok(())
}
