//! `cargo ebpf-ext`: build, sign, package, check and test the eBPF extension drivers of any
//! workspace (see the crate's library, which the SDK's `cargo xtask` uses too).

use std::path::PathBuf;

use anyhow::Result;
use cargo_ebpf_ext::workspace::Workspace;
use cargo_ebpf_ext::{drivers, export, new, prereqs};
use clap::{Args, Parser, Subcommand};

/// cargo invokes `cargo-ebpf-ext ebpf-ext ARGS`.
#[derive(Parser)]
#[command(name = "cargo", bin_name = "cargo")]
enum Cargo {
    /// eBPF-for-Windows extension drivers: build, sign, package, check, test.
    EbpfExt(Cli),
}

#[derive(Args)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// Which workspace and which driver packages.
#[derive(Args)]
struct Selection {
    /// The workspace's (or a member's) `Cargo.toml`; otherwise the workspace around the
    /// current directory.
    #[arg(long, global = true)]
    manifest_path: Option<PathBuf>,
    /// Only this driver package (repeatable); otherwise every driver package of the
    /// workspace (packages with `[package.metadata.wdk.driver-model]`).
    #[arg(long, short, global = true)]
    package: Vec<String>,
}

#[derive(Subcommand)]
enum Command {
    /// Builds the driver packages into `.sys` images (`<workspace>/target/driver/`), with import
    /// libraries generated from ebpf-ext-sys and the driver profile applied, and checks them.
    Build(Selection),
    /// Test-signs the built images (a certificate made once per workspace) and verifies them.
    Sign(Selection),
    /// Lays out `<workspace>/target/driver/<name>_package/` for each signed driver.
    Package(Selection),
    /// Checks the built images again: this tool's checks and Python pefile's.
    Check(Selection),
    /// Runs each driver package's host tests, linked and as its signed image.
    Test(Selection),
    /// Writes each driver's eBPF store entries (`<name>.reg`, `Install-<name>.ps1`) from the
    /// program data its signed image publishes (`[package.metadata.ebpf-ext.store]` names
    /// the program types and sections).
    ExportProgramInfo(Selection),
    /// The prerequisites: what is installed, `--install` for what is missing.
    Prereqs(prereqs::Options),
    /// A new extension NAME: program type, helper, hook, driver glue, host tests in both
    /// modes, .inx/.wprp/.guid, fresh GUIDs. Inside a workspace, a member of it at
    /// `drivers/NAME` with the SDK pinned as the workspace pins it; elsewhere a repository of
    /// its own with the SDK pinned by the tag this tool was installed from.
    New(NewOptions),
}

#[derive(Args)]
struct NewOptions {
    /// The package name (`my-ext`); the image is `my_ext.sys`.
    name: String,
    /// The folder to create (default: `drivers/NAME` under the workspace root for a member,
    /// `./NAME` for a repository of its own).
    #[arg(long)]
    path: Option<PathBuf>,
    /// Add it to the workspace around the current directory (the default when there is one
    /// and the folder is under its root); fails if there is none.
    #[arg(long, conflicts_with = "standalone")]
    workspace_member: bool,
    /// Make a repository of its own (its own workspace) even inside a workspace.
    #[arg(long)]
    standalone: bool,
    /// The SDK's git URL (default: the one this tool was installed from).
    #[arg(long, requires = "sdk_tag")]
    sdk_git: Option<String>,
    /// The SDK's tag (default: the one this tool was installed from).
    #[arg(long, requires = "sdk_git")]
    sdk_tag: Option<String>,
    /// Depend on an SDK checkout by path instead (trying the SDK itself).
    #[arg(long, conflicts_with_all = ["sdk_git", "sdk_tag"])]
    sdk_path: Option<PathBuf>,
}

fn new(options: &NewOptions) -> Result<()> {
    let explicit = match (&options.sdk_git, &options.sdk_tag, &options.sdk_path) {
        (Some(url), Some(tag), _) => Some(new::Sdk::Git {
            url: url.clone(),
            tag: tag.clone(),
        }),
        (_, _, Some(path)) => Some(new::Sdk::checkout(new::absolute(path)?)?),
        _ => None,
    };
    let here = std::env::current_dir()?;
    let around = if options.standalone {
        None
    } else {
        new::enclosing_workspace(&here)
    };
    let path = options.path.as_deref().map(new::absolute).transpose()?;
    match around {
        Some((root, metadata))
            if options.workspace_member
                || path
                    .as_ref()
                    .is_none_or(|p| new::physical(p).starts_with(new::physical(&root))) =>
        {
            let dir = path.unwrap_or_else(|| root.join("drivers").join(&options.name));
            let sdk = match explicit.or_else(|| new::Sdk::from_workspace(&metadata)) {
                Some(sdk) => sdk,
                None => new::Sdk::installed()?,
            };
            report(
                "created",
                &new::add_member(&options.name, &root, &dir, &sdk)?,
            );
        }
        None if options.workspace_member => {
            anyhow::bail!(
                "--workspace-member: cargo metadata finds no workspace around {}",
                here.display()
            );
        }
        _ => {
            let sdk = match explicit {
                Some(sdk) => sdk,
                None => new::Sdk::installed()?,
            };
            let dir = path.unwrap_or_else(|| PathBuf::from(&options.name));
            report("created", &new::create(&options.name, &dir, &sdk)?);
        }
    }
    Ok(())
}

/// The selected workspace, refused when it pins another tag of the SDK than this tool was
/// installed from ([`new::Sdk::mismatch`]; not checked for a tool without a tagged git install
/// record beside it, as one run from a build folder).
fn workspace(selection: &Selection) -> Result<Workspace> {
    let ws = Workspace::find(selection.manifest_path.as_deref())?;
    if let (Some(pinned), Some(installed)) = (&ws.sdk, new::Sdk::of_this_tool())
        && let Some(why) = new::Sdk::mismatch(&installed, pinned)
    {
        anyhow::bail!(why);
    }
    Ok(ws)
}

fn report(what: &str, paths: &[PathBuf]) {
    for path in paths {
        println!("{what} {}", path.display());
    }
}

fn main() -> Result<()> {
    let Cargo::EbpfExt(cli) = Cargo::parse();
    match cli.command {
        Command::Build(s) => report("built", &drivers::build(&workspace(&s)?, &s.package)?),
        Command::Sign(s) => report("signed", &drivers::sign(&workspace(&s)?, &s.package)?),
        Command::Package(s) => report("packaged", &drivers::package(&workspace(&s)?, &s.package)?),
        Command::Check(s) => report("checked", &drivers::check(&workspace(&s)?, &s.package)?),
        Command::Test(s) => drivers::test(&workspace(&s)?, &s.package)?,
        Command::ExportProgramInfo(s) => {
            report("exported", &export::export(&workspace(&s)?, &s.package)?);
        }
        Command::Prereqs(options) => prereqs::prereqs(&options)?,
        Command::New(options) => new(&options)?,
    }
    Ok(())
}
