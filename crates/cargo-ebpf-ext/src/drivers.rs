//! `build`, `sign`, `package`, `check` and `test`: real, signed `.sys` files for the driver
//! packages of a workspace, on Linux, and their host tests in both modes.
//!
//! The build uses Debian's `rustc-web` (with `rust-web-src`, `core`/`alloc` built from source
//! with `-Zbuild-std`) for `x86_64-pc-windows-msvc` with the driver profile ([`PROFILE`],
//! passed as `--config` settings, so a workspace need not declare it), and links with
//! `lld-link` as a native driver against import libraries made by `llvm-dlltool` from `.def`
//! files generated from `ebpf-ext-sys`'s declarations ([`crate::imports`]). Each image then
//! gets the section fix-ups lld-link output needs and a correct checksum, and is checked
//! twice: by this crate (`pe.rs`) and by Python `pefile` (`pecheck.py`).

use core::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};

use crate::exec::{note, run};
use crate::imports::{DefFile, declared, def_files_with, merge};
use crate::pe::{Image, map_symbol_rva};
use crate::prereqs::{PEFILE, Tool, command, pefile_python};
use crate::workspace::{Driver, Workspace};

/// The cargo profile driver images are built with.
pub const PROFILE: &str = "driver";

/// The driver profile's settings, applied with `--config` (the tracelogging crate's kernel
/// mode links only with fat LTO and one codegen unit; a driver cannot unwind).
pub const PROFILE_SETTINGS: &[&str] = &[
    "profile.driver.inherits=\"release\"",
    "profile.driver.lto=\"fat\"",
    "profile.driver.codegen-units=1",
    "profile.driver.panic=\"abort\"",
    "profile.driver.debug=\"full\"",
];

/// The target Windows kernel drivers are built for.
pub const DRIVER_TARGET: &str = "x86_64-pc-windows-msvc";

/// The variable that tells host tests where the images are, and the hash the demo and the
/// tests compare images by: one definition, in `ebpf_ext_testing::image`.
pub use ebpf_ext_testing::image::{DRIVER_DIR_VAR, NATIVE_ONLY_VAR, sha256_hex};

/// The pefile check script, compiled in (written next to the images when it runs).
const PECHECK: &str = include_str!("../pecheck.py");

/// Fails with how to install `tool` unless it can be started (some, like `llvm-dlltool`, have
/// no `--version` and exit non-zero).
fn require(tool: Tool) -> Result<()> {
    let ok = command(tool).arg("--version").output().is_ok();
    if !ok {
        bail!(
            "{} not found; {}",
            tool.program().to_string_lossy(),
            tool.hint()
        );
    }
    Ok(())
}

/// Checks for the toolchain that builds `core`/`alloc` for the driver target from source:
/// Debian's `cargo-web` and `rustc-web` (`/usr/bin/cargo`, `/usr/bin/rustc`) with
/// `rust-web-src`.
///
/// # Errors
/// Naming what is missing and how to install it.
pub fn driver_toolchain() -> Result<()> {
    for tool in [Tool::SystemCargo, Tool::SystemRustc] {
        if !Path::new(&tool.program()).is_file() {
            bail!(
                "{} is missing (the driver build needs it); {}",
                tool.program().to_string_lossy(),
                tool.hint()
            );
        }
    }
    let sysroot = command(Tool::SystemRustc)
        .args(["--print", "sysroot"])
        .output()
        .context("run rustc --print sysroot")?;
    if !sysroot.status.success() {
        bail!(
            "{} --print sysroot failed ({}): {}; {}",
            Tool::SystemRustc.program().to_string_lossy(),
            sysroot.status,
            String::from_utf8_lossy(&sysroot.stderr).trim(),
            Tool::SystemRustc.hint()
        );
    }
    let sysroot = PathBuf::from(String::from_utf8_lossy(&sysroot.stdout).trim());
    if !sysroot.join("lib/rustlib/src/rust/library/core").is_dir() {
        bail!(
            "the system Rust toolchain has no library sources (needed for -Zbuild-std); sudo apt-get install rust-web-src"
        );
    }
    Ok(())
}

/// Writes the generated `.def` files under `out/lib` (the SDK's modules and those `drivers`
/// declare) and makes their import libraries.
fn import_libraries(out: &Path, drivers: &[&Driver]) -> Result<(PathBuf, Vec<DefFile>)> {
    require(Tool::Dlltool)?;
    let lib_dir = out.join("lib");
    fs::create_dir_all(&lib_dir)?;
    let defs = def_files_with(&merge(drivers)?);
    for def in &defs {
        let path = lib_dir.join(format!("{}.def", def.stem));
        fs::write(&path, def.text())?;
        run(command(Tool::Dlltool)
            .args(["-m", "i386:x86-64", "-d"])
            .arg(&path)
            .arg("-l")
            .arg(lib_dir.join(format!("{}.lib", def.stem))))?;
    }
    Ok((lib_dir, defs))
}

/// `--config` setting of the driver target's `rustflags` to `flags`, as a TOML array of
/// strings: each flag stays one argument (a path with a space too), and cargo joins the array
/// to the ones the workspace's configuration sets for the target.
fn rustflags_config(flags: &[String]) -> String {
    let quoted: Vec<String> = flags.iter().map(|flag| toml_string(flag)).collect();
    format!("target.{DRIVER_TARGET}.rustflags=[{}]", quoted.join(","))
}

/// `s` as a TOML basic string: quoted, with `"`, `\` and control characters escaped.
pub(crate) fn toml_string(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if c.is_control() => {
                let _ = write!(out, "\\u{:04X}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// The rustc flags that link a native-subsystem driver, one argument each.
fn link_flags(lib_dir: &Path, defs: &[DefFile]) -> Vec<String> {
    let args = [
        "/DRIVER",
        "/NODEFAULTLIB",
        "/SUBSYSTEM:NATIVE",
        "/ENTRY:DriverEntry",
        // A process-notify routine requires it; harmless elsewhere.
        "/INTEGRITYCHECK",
        "/NXCOMPAT",
        "/DYNAMICBASE",
        "/OPT:REF,ICF",
        "/MANIFEST:NO",
        "/MAP",
        // Sections lld-link would otherwise leave for the loader to reject
        // (windows-drivers-rs issue 182); `fix_sections` repairs any that remain.
        "/MERGE:.edata=.rdata",
        "/MERGE:.rustc=.data",
    ];
    let mut flags = vec!["-C".to_owned(), "linker=lld-link".to_owned()];
    let mut link_arg = |arg: String| flags.extend(["-C".to_owned(), format!("link-arg={arg}")]);
    link_arg(format!("/LIBPATH:{}", lib_dir.display()));
    for arg in args {
        link_arg(arg.to_owned());
    }
    for def in defs {
        link_arg(format!("{}.lib", def.stem));
    }
    flags
}

/// The virtual environment of the pefile check: `<output>/pyenv`.
#[must_use]
pub fn pefile_venv(out: &Path) -> PathBuf {
    out.join("pyenv")
}

/// Makes sure the pefile check's virtual environment exists and has pefile. One left half-made
/// (a `venv` interrupted, or one whose pip never came) is made again.
fn ensure_pefile(out: &Path) -> Result<PathBuf> {
    let venv = pefile_venv(out);
    let succeeds = |args: &[&str]| {
        pefile_python(&venv)
            .args(args)
            .output()
            .is_ok_and(|o| o.status.success())
    };
    if succeeds(&["-c", "import pefile"]) {
        return Ok(venv);
    }
    if !succeeds(&["-m", "pip", "--version"]) {
        run(command(Tool::Python3)
            .args(["-m", "venv", "--clear"])
            .arg(&venv))
        .with_context(|| format!("python3 -m venv failed; {}", Tool::Python3.hint()))?;
    }
    run(pefile_python(&venv).args(["-m", "pip", "install", "--quiet", PEFILE]))?;
    Ok(venv)
}

/// Checks an image with this crate's reader and with pefile; fails listing every problem.
/// Imports may come from the SDK's kernel modules and those `declared` (the driver's
/// `[package.metadata.ebpf-ext.imports]`).
///
/// # Errors
/// Every problem either check found.
pub fn check_image(
    out: &Path,
    sys: &Path,
    map: &Path,
    declared: &[(String, Vec<String>)],
) -> Result<()> {
    let image = Image::parse(fs::read(sys).with_context(|| format!("read {}", sys.display()))?)?;
    let map = fs::read_to_string(map).with_context(|| format!("read {}", map.display()))?;
    let entry = map_symbol_rva(&map, "DriverEntry");
    let problems = image.problems(entry, true, declared);
    if !problems.is_empty() {
        bail!(
            "{} fails its checks:\n  {}",
            sys.display(),
            problems.join("\n  ")
        );
    }
    let imports = image.imports();
    note(&format!(
        "  cargo-ebpf-ext: ok   {}: native subsystem, entry DriverEntry at {:#x}, FORCE_INTEGRITY, no W+X section, checksum {:#x}, imports {}",
        sys.file_name().unwrap_or_default().to_string_lossy(),
        image.entry_rva,
        image.stored_checksum(),
        imports
            .iter()
            .map(|(m, names)| format!("{m} ({})", names.len()))
            .collect::<Vec<_>>()
            .join(", ")
    ));
    let venv = ensure_pefile(out)?;
    let script = out.join("pecheck.py");
    fs::write(&script, PECHECK)?;
    let mut pefile = pefile_python(&venv);
    pefile
        .arg(script)
        .arg(sys)
        .arg(format!("{:#x}", entry.unwrap_or(0)))
        .arg("--integrity");
    for (module, _) in declared {
        pefile.args(["--allow-module", module]);
    }
    run(&mut pefile).context("pefile disagrees with the image")
}

/// The built image of `driver` and its map, in `out`.
fn built(out: &Path, driver: &Driver, command: &str) -> Result<(PathBuf, PathBuf)> {
    let sys = out.join(format!("{}.sys", driver.name));
    if !sys.is_file() {
        bail!(
            "{} is not built (looked for {}); run {command} first",
            driver.package,
            sys.display()
        );
    }
    Ok((sys, out.join(format!("{}.map", driver.name))))
}

/// The cargo command that builds `package`'s driver image into `target_dir`, with the
/// driver profile and `link_config` (the link flags, a `--config` setting). Flags the
/// environment would give instead of the target's `rustflags` are removed: cargo takes
/// `CARGO_ENCODED_RUSTFLAGS`, then `RUSTFLAGS`, over the configuration, so either would drop
/// the link flags (and the build would look for `link.exe`).
fn driver_cargo(
    root: &Path,
    package: &str,
    target_dir: &Path,
    link_config: &str,
) -> std::process::Command {
    let mut cargo = command(Tool::SystemCargo);
    cargo
        .current_dir(root)
        .args([
            "rustc",
            "--lib",
            "--crate-type",
            "cdylib",
            "--target",
            DRIVER_TARGET,
        ])
        .args([
            "-Zbuild-std=core,alloc,compiler_builtins",
            "-Zbuild-std-features=compiler-builtins-mem",
        ]);
    for setting in PROFILE_SETTINGS {
        cargo.args(["--config", setting]);
    }
    cargo
        .args([
            "--profile",
            PROFILE,
            "--package",
            package,
            "--features",
            "driver",
        ])
        .env("RUSTC_BOOTSTRAP", "1")
        .env("RUSTC", Tool::SystemRustc.program())
        .env_remove("RUSTUP_TOOLCHAIN")
        .env_remove("CARGO")
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .env_remove("RUSTFLAGS")
        // Debian's cargo cannot fetch git dependencies (an SDK pinned by tag) with its
        // libgit2 ("invalid version 0 on git_proxy_options"); the git program can.
        .env("CARGO_NET_GIT_FETCH_WITH_CLI", "true")
        .env("CARGO_TARGET_DIR", target_dir)
        // Joined to any the workspace's own configuration gives for the target.
        .args(["--config", link_config]);
    cargo
}

/// Builds the driver packages `only` names (all when empty) into `<root>/target/driver/`,
/// post-processes and checks the images. Returns the `.sys` paths.
///
/// # Errors
/// A missing prerequisite, a failed build, or an image that fails its checks.
pub fn build(ws: &Workspace, only: &[String]) -> Result<Vec<PathBuf>> {
    let _held = ws.lock_output()?;
    let drivers = ws.select(only)?;
    crate::prereqs::ensure(crate::prereqs::Scope::Drivers)?;
    driver_toolchain()?;
    let out = ws.output_dir();
    fs::create_dir_all(&out)?;
    let (lib_dir, defs) = import_libraries(&out, &drivers)?;
    let target_dir = ws.root.join("target");
    let mut built = Vec::new();
    for driver in drivers {
        let started = std::time::Instant::now();
        // One line per driver: the slow part (core/alloc from source on a first build, then
        // the fat-LTO link) is announced first and timed when it ends.
        print!(
            "  {}: compiling (core/alloc from source on a first build), fat-LTO link ... ",
            driver.package
        );
        let _ = std::io::Write::flush(&mut std::io::stdout());
        run(&mut driver_cargo(
            &ws.root,
            &driver.package,
            &target_dir,
            &rustflags_config(&link_flags(&lib_dir, &defs)),
        ))?;
        println!("built in {:.0} s", started.elapsed().as_secs_f64());
        let artifacts = target_dir.join(DRIVER_TARGET).join(PROFILE);
        let dll = artifacts.join(format!("{}.dll", driver.name));
        let mut image =
            Image::parse(fs::read(&dll).with_context(|| format!("read {}", dll.display()))?)?;
        for change in image.fix_sections() {
            note(&format!("  fix-up: {change}"));
        }
        image.write_checksum();
        let sys = out.join(format!("{}.sys", driver.name));
        fs::write(&sys, &image.bytes)?;
        fs::copy(
            artifacts.join(format!("{}.pdb", driver.name)),
            out.join(format!("{}.pdb", driver.name)),
        )?;
        let map = out.join(format!("{}.map", driver.name));
        fs::copy(
            artifacts.join("deps").join(format!("{}.map", driver.name)),
            &map,
        )?;
        check_image(&out, &sys, &map, &declared(driver)?)?;
        built.push(sys);
    }
    Ok(built)
}

/// Checks the built images of the drivers `only` names (all when empty) again, ours and
/// pefile's, after checking that no two drivers of the workspace claim the same identity
/// ([`crate::export::check_unique`]).
///
/// # Errors
/// An unbuilt driver or a failed check.
pub fn check(ws: &Workspace, only: &[String]) -> Result<Vec<PathBuf>> {
    let _held = ws.lock_output()?;
    crate::export::check_unique(ws)?;
    let out = ws.output_dir();
    let mut checked = Vec::new();
    for driver in ws.select(only)? {
        let (sys, map) = built(&out, driver, "cargo ebpf-ext build")?;
        check_image(&out, &sys, &map, &declared(driver)?)?;
        checked.push(sys);
    }
    Ok(checked)
}

/// Runs the host tests of the drivers `only` names (all when empty): one `cargo test` per
/// package, whose tests run the linked crate and, through [`DRIVER_DIR_VAR`], the signed
/// image (`ebpf_ext_testing::image`).
///
/// # Errors
/// An unbuilt or unsigned driver, or a failed test.
pub fn test(ws: &Workspace, only: &[String]) -> Result<()> {
    let _held = ws.lock_output()?;
    let out = ws.output_dir();
    for driver in ws.select(only)? {
        let (sys, _) = built(&out, driver, "cargo ebpf-ext build && cargo ebpf-ext sign")?;
        if !is_signed(&sys)? {
            bail!(
                "{} is not signed; run cargo ebpf-ext sign first",
                sys.display()
            );
        }
        run(command(Tool::Cargo)
            .current_dir(&ws.root)
            .args(["test", "--package", &driver.package])
            .env(DRIVER_DIR_VAR, &out)
            .env_remove(NATIVE_ONLY_VAR))?;
    }
    Ok(())
}

/// Where the test certificate lives under `out`: the PEM certificate and key `sign` uses,
/// and the DER `.cer` a package ships.
fn certificate_paths(out: &Path) -> (PathBuf, PathBuf, PathBuf) {
    let dir = out.join("cert");
    (
        dir.join("cert.pem"),
        dir.join("key.pem"),
        dir.join("EbpfExtLocalTestCert.cer"),
    )
}

/// Checks that `file`'s signature verifies against the certificate `cert` (PEM).
fn verify_signature(file: &Path, cert: &Path) -> Result<()> {
    require(Tool::Osslsigncode)?;
    run(command(Tool::Osslsigncode)
        .arg("verify")
        .arg("-CAfile")
        .arg(cert)
        .arg("-in")
        .arg(file))
}

/// The test-signing certificate of this checkout: created once under `target/driver/cert`.
/// Returns (certificate PEM, key PEM, certificate DER `.cer`).
fn test_certificate(out: &Path) -> Result<(PathBuf, PathBuf, PathBuf)> {
    let (cert, key, cer) = certificate_paths(out);
    let dir = out.join("cert");
    if !(cert.is_file() && key.is_file() && cer.is_file()) {
        fs::create_dir_all(&dir)?;
        require(Tool::Openssl)?;
        run(command(Tool::Openssl)
            .args([
                "req", "-x509", "-newkey", "rsa:3072", "-sha256", "-nodes", "-days", "3650",
            ])
            .args(["-subj", "/CN=EbpfExtLocalTestCert"])
            .args([
                "-addext",
                "extendedKeyUsage=codeSigning",
                "-addext",
                "keyUsage=critical,digitalSignature",
            ])
            .arg("-keyout")
            .arg(&key)
            .arg("-out")
            .arg(&cert))?;
        run(command(Tool::Openssl)
            .args(["x509", "-outform", "der", "-in"])
            .arg(&cert)
            .arg("-out")
            .arg(&cer))?;
    }
    Ok((cert, key, cer))
}

/// Authenticode-signs `file` (a `.sys`, or a `.cat` on Windows) in place with the test
/// certificate, replacing any signature it has, then verifies it.
fn sign_file(file: &Path, description: &str, out: &Path) -> Result<()> {
    let (cert, key, _) = test_certificate(out)?;
    require(Tool::Osslsigncode)?;
    let tmp = file.with_extension("signing");
    let _ = fs::remove_file(&tmp);
    // Signing again replaces the signature rather than adding one.
    let is_pe = file.extension().is_some_and(|e| e == "sys");
    let input = if is_pe && Image::parse(fs::read(file)?)?.has_certificate_table() {
        let unsigned = file.with_extension("unsigned");
        let _ = fs::remove_file(&unsigned);
        run(command(Tool::Osslsigncode)
            .arg("remove-signature")
            .arg("-in")
            .arg(file)
            .arg("-out")
            .arg(&unsigned))?;
        unsigned
    } else {
        file.to_path_buf()
    };
    run(command(Tool::Osslsigncode)
        .args(["sign", "-h", "sha256", "-n", description])
        .arg("-certs")
        .arg(&cert)
        .arg("-key")
        .arg(&key)
        .arg("-in")
        .arg(&input)
        .arg("-out")
        .arg(&tmp))?;
    if input != file {
        fs::remove_file(&input)?;
    }
    // Verified before it replaces the file: a signature that does not verify never takes the
    // place of the image, where a later step could take it for a good one.
    if let Err(error) = verify_signature(&tmp, &cert) {
        let _ = fs::remove_file(&tmp);
        return Err(error.context("the signature does not verify"));
    }
    fs::rename(&tmp, file)?;
    Ok(())
}

/// Authenticode-signs the built `.sys` of each driver `only` names (all when empty) with the
/// test certificate, verifies it, and checks the signed image again.
///
/// # Errors
/// An unbuilt driver, a failed signature or check.
pub fn sign(ws: &Workspace, only: &[String]) -> Result<Vec<PathBuf>> {
    let _held = ws.lock_output()?;
    let out = ws.output_dir();
    let mut signed = Vec::new();
    for driver in ws.select(only)? {
        let (sys, map) = built(&out, driver, "cargo ebpf-ext build")?;
        sign_file(&sys, &driver.package, &out)?;
        check_image(&out, &sys, &map, &declared(driver)?)
            .context("the signed image fails its checks")?;
        signed.push(sys);
    }
    Ok(signed)
}

fn is_signed(sys: &Path) -> Result<bool> {
    let bytes = fs::read(sys)?;
    let image = Image::parse(bytes)?;
    Ok(image.has_signature())
}

/// Today's date (UTC) as `MM/DD/YYYY`, the form `DriverVer` takes.
fn driver_date() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let (year, month, day) = civil_from_days(i64::try_from(secs / 86_400).unwrap_or(0));
    format!("{month:02}/{day:02}/{year}")
}

/// The proleptic Gregorian date of a day count since 1970-01-01 (Howard Hinnant's
/// `civil_from_days`).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = u32::try_from(doy - (153 * mp + 2) / 5 + 1).unwrap_or(1);
    let month = u32::try_from(if mp < 10 { mp + 3 } else { mp - 9 }).unwrap_or(1);
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// Stamps `DriverVer` into an `.inx` template, as stampinf does: `$DRIVERVER$` becomes
/// `MM/DD/YYYY,w.x.y.z`.
///
/// # Errors
/// As [`driver_ver_version`]; an `.inx` without `$DRIVERVER$` (packaging stamps `DriverVer`
/// from the crate's version; a hand-written one would not follow it); a `$TOKEN$` (capitals
/// and `_`) left after stamping, such as stampinf's `$ARCH$`, which this tool does not fill
/// in. The INF signatures (`$WINDOWS NT$`, `$CHICAGO$`, `$WINDOWS 95$`, any case) are no
/// tokens.
fn stamp_inf(inx: &str, version: &str) -> Result<String> {
    let version = driver_ver_version(version)?;
    if !inx.contains("$DRIVERVER$") {
        bail!(
            "the .inx has no $DRIVERVER$: its [Version] section needs `DriverVer = $DRIVERVER$`, which packaging stamps from the crate's version"
        );
    }
    let inf = inx.replace("$DRIVERVER$", &format!("{},{version}", driver_date()));
    if let Some(token) = unstamped_token(&inf) {
        bail!("the .inx holds {token}, which packaging does not stamp (only $DRIVERVER$)");
    }
    Ok(inf)
}

/// The INF signatures, which look like tokens (compared without case).
const SIGNATURES: [&str; 3] = ["$WINDOWS NT$", "$CHICAGO$", "$WINDOWS 95$"];

/// The first `$NAME$` in `text` whose name is capitals and `_` only and that is no
/// [`SIGNATURES`] entry.
fn unstamped_token(text: &str) -> Option<&str> {
    let mut rest = text;
    let mut offset = 0;
    while let Some(start) = rest.find('$') {
        let after = &rest[start + 1..];
        let name_len = after
            .find(|c: char| !(c.is_ascii_uppercase() || c == '_'))
            .unwrap_or(after.len());
        if name_len > 0 && after[name_len..].starts_with('$') {
            let at = offset + start;
            let token = &text[at..at + name_len + 2];
            if !SIGNATURES.iter().any(|s| s.eq_ignore_ascii_case(token)) {
                return Some(token);
            }
        }
        offset += start + 1;
        rest = after;
    }
    None
}

/// The four-part version an INF's `DriverVer` takes (`w.x.y.z`, each below 65535, not all
/// zero) for a crate version `major.minor.patch[-pre][+build]`: `major.minor.patch.0`. A
/// pre-release or build suffix has no place there and is dropped (`1.0.0-rc.1` and `1.0.0`
/// stamp the same).
///
/// # Errors
/// A version that is not three numbers before any suffix, a number of 65535 or more, or
/// `0.0.0` (Windows refuses `DriverVer` 0.0.0.0; it is also what cargo reports for a package
/// without a `version`).
fn driver_ver_version(version: &str) -> Result<String> {
    let core = version.split(['-', '+']).next().unwrap_or_default();
    let parts: Vec<&str> = core.split('.').collect();
    let numbers: Option<Vec<u16>> = parts
        .iter()
        .map(|p| p.parse::<u16>().ok().filter(|&n| n < u16::MAX))
        .collect();
    match numbers {
        Some(n) if n == [0, 0, 0] => {
            bail!("version {version}: DriverVer 0.0.0.0 is not valid; give the package a version")
        }
        Some(n) if n.len() == 3 => Ok(format!("{}.{}.{}.0", n[0], n[1], n[2])),
        _ => {
            bail!("version {version}: an INF's DriverVer needs major.minor.patch, each below 65535")
        }
    }
}

/// Lays out `<root>/target/driver/<name>_package/` for each driver `only` names (all when
/// empty): the signed image, its PDB and map, the INF stamped from the `.inx`, the `.wprp` and
/// `.guid`, the test certificate, and the eBPF store's `.reg` and `Install-<name>.ps1` when the
/// manifest has `[package.metadata.ebpf-ext.store]` ([`crate::export`]).
///
/// # Errors
/// An unbuilt or unsigned driver, no test certificate (packaging never makes one), an image
/// whose signature does not verify against it, or a missing `.inx`, `.wprp` or `.guid`.
pub fn package(ws: &Workspace, only: &[String]) -> Result<Vec<PathBuf>> {
    let _held = ws.lock_output()?;
    let out = ws.output_dir();
    let drivers = ws.select(only)?;
    crate::export::check_unique(ws)?;
    // The certificate `sign` used, never a new one: the package must hold the certificate its
    // image verifies against.
    let (cert, _, cer) = certificate_paths(&out);
    if !(cert.is_file() && cer.is_file()) {
        bail!(
            "no test certificate in {}; run the sign step first",
            out.join("cert").display()
        );
    }
    let mut packages = Vec::new();
    for driver in drivers {
        let dir = out.join(format!("{}_package", driver.name));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir)?;
        for ext in ["sys", "pdb", "map"] {
            let file = format!("{}.{ext}", driver.name);
            fs::copy(out.join(&file), dir.join(&file)).with_context(|| {
                format!(
                    "{file} missing in {}; run the build and sign steps first",
                    out.display()
                )
            })?;
        }
        let sys = dir.join(format!("{}.sys", driver.name));
        if !is_signed(&sys)? {
            bail!("{}.sys is not signed; run the sign step first", driver.name);
        }
        verify_signature(&sys, &cert).with_context(|| {
            format!(
                "{}.sys does not verify against the test certificate in {}; run the sign step again",
                driver.name,
                out.join("cert").display()
            )
        })?;
        let inx_path = driver.dir.join(format!("{}.inx", driver.name));
        let inx = fs::read_to_string(&inx_path)
            .with_context(|| format!("{} has no {}", driver.package, inx_path.display()))?;
        fs::write(
            dir.join(format!("{}.inf", driver.name)),
            stamp_inf(&inx, &driver.version)
                .with_context(|| format!("{}: DriverVer", driver.package))?,
        )?;
        for ext in ["wprp", "guid"] {
            let file = driver.dir.join(format!("{}.{ext}", driver.name));
            fs::copy(&file, dir.join(file.file_name().unwrap_or_default()))
                .with_context(|| format!("{} has no {}", driver.package, file.display()))?;
        }
        fs::copy(&cer, dir.join("EbpfExtLocalTestCert.cer"))?;
        // The eBPF store entries (`.reg`, install script), when the manifest declares them.
        for file in crate::export::write(driver, &out, &dir)? {
            note(&format!("  store: {}", file.display()));
        }
        if cfg!(windows) && command(Tool::Inf2cat).arg("/?").output().is_ok() {
            run(command(Tool::Inf2cat)
                .arg(format!("/driver:{}", dir.display()))
                .arg("/os:10_x64"))?;
            sign_file(
                &dir.join(format!("{}.cat", driver.name)),
                &driver.package,
                &out,
            )?;
        } else {
            note(&format!(
                "  {}.cat skipped: inf2cat is a Windows WDK tool; the .sys itself is signed, which is what test-signed loading (sc create) needs",
                driver.name
            ));
        }
        packages.push(dir);
    }
    Ok(packages)
}

#[cfg(test)]
mod tests {
    use crate::prereqs::{Tool, command, pefile_python};

    /// A virtual environment left without pip (`venv` interrupted, or made without it) is
    /// made again, and then has pefile. Installs pefile from PyPI into a folder of its own.
    #[test]
    #[cfg(not(windows))]
    fn a_half_made_pefile_environment_is_made_again() {
        let out = tempfile::tempdir().expect("a folder");
        let venv = super::pefile_venv(out.path());
        let made = command(Tool::Python3)
            .args(["-m", "venv", "--without-pip"])
            .arg(&venv)
            .status()
            .expect("python3 runs");
        assert!(made.success());
        assert!(venv.join("bin").join("python").is_file(), "half made");
        super::ensure_pefile(out.path()).expect("made again");
        let imports = pefile_python(&venv)
            .args(["-c", "import pefile"])
            .status()
            .expect("the environment's python runs");
        assert!(imports.success());
    }

    #[test]
    fn driver_dates_are_civil_dates() {
        assert_eq!(super::civil_from_days(0), (1970, 1, 1));
        assert_eq!(super::civil_from_days(11_016), (2000, 2, 29));
        assert_eq!(super::civil_from_days(20_786), (2026, 11, 29));
        assert_eq!(super::civil_from_days(-1), (1969, 12, 31));
    }

    #[test]
    fn driver_ver_takes_four_numbers_below_65535_not_all_zero() {
        let ver = |v: &str| super::driver_ver_version(v).ok();
        assert_eq!(ver("0.1.0").as_deref(), Some("0.1.0.0"));
        assert_eq!(ver("0.0.1").as_deref(), Some("0.0.1.0"));
        assert_eq!(ver("1.2.3-rc.1").as_deref(), Some("1.2.3.0"));
        assert_eq!(ver("1.2.3+build.7").as_deref(), Some("1.2.3.0"));
        assert_eq!(ver("65534.0.1").as_deref(), Some("65534.0.1.0"));
        assert_eq!(ver("65535.0.1"), None, "each part below 65535");
        assert_eq!(ver("65536.0.0"), None);
        assert_eq!(ver("0.0.0"), None, "0.0.0.0 is not valid");
        assert_eq!(ver("1.2"), None);
        assert_eq!(ver("1.2.x"), None);
        let inf = super::stamp_inf("DriverVer = $DRIVERVER$", "2.0.1-beta").expect("stamped");
        assert!(inf.ends_with(",2.0.1.0"), "{inf}");
    }

    #[test]
    fn an_inx_is_refused_without_driverver_or_with_a_token_left() {
        let signature = "Signature = \"$WINDOWS NT$\"\r\nDriverVer = $DRIVERVER$\r\n";
        assert!(
            super::stamp_inf(signature, "1.0.0").is_ok(),
            "the signature is no token"
        );
        let missing = super::stamp_inf("Signature = \"$WINDOWS NT$\"\r\n", "1.0.0");
        assert!(
            missing.is_err_and(|e| e.to_string().contains("no $DRIVERVER$")),
            "an INF without DriverVer"
        );
        let arch = super::stamp_inf(
            "DriverVer = $DRIVERVER$\r\n[Manufacturer]\r\n%M% = Standard,NT$ARCH$\r\n",
            "1.0.0",
        );
        assert!(
            arch.is_err_and(|e| e.to_string().contains("$ARCH$")),
            "stampinf's other tokens are not filled in"
        );
        assert_eq!(super::unstamped_token("a $ b $C_D$ e"), Some("$C_D$"));
        assert_eq!(
            super::unstamped_token("Signature = \"$CHICAGO$\" ; or \"$Windows 95$\""),
            None,
            "signatures are no tokens"
        );
        assert_eq!(super::unstamped_token("$$ $x$ $"), None);
    }

    #[test]
    fn the_driver_build_clears_flags_that_would_replace_the_link_flags() {
        let cargo = super::driver_cargo(
            std::path::Path::new("/ws"),
            "my-ext",
            std::path::Path::new("/ws/target"),
            "target.x.rustflags=[]",
        );
        let envs: Vec<_> = cargo.get_envs().collect();
        for name in ["CARGO_ENCODED_RUSTFLAGS", "RUSTFLAGS"] {
            assert!(
                envs.contains(&(std::ffi::OsStr::new(name), None)),
                "{name} removed: {envs:?}"
            );
        }
        let args: Vec<_> = cargo.get_args().collect();
        assert_eq!(
            args.last(),
            Some(&std::ffi::OsStr::new("target.x.rustflags=[]"))
        );
    }

    #[test]
    fn the_link_names_every_generated_import_library() {
        let defs = crate::imports::def_files();
        let flags = super::link_flags(std::path::Path::new("/lib"), &defs);
        for lib in ["ntoskrnl.lib", "rpcrt4.lib"] {
            assert!(flags.contains(&format!("link-arg={lib}")), "{flags:?}");
        }
        // A library folder with a space in its path is one argument.
        let spaced = super::link_flags(std::path::Path::new("/my ext/lib"), &defs);
        assert!(
            spaced.contains(&"link-arg=/LIBPATH:/my ext/lib".to_owned()),
            "{spaced:?}"
        );
        assert!(spaced.chunks(2).all(|pair| pair[0] == "-C"), "{spaced:?}");
        let config = super::rustflags_config(&[
            "-C".to_owned(),
            "link-arg=/LIBPATH:/my ext/a\"b\\c".to_owned(),
        ]);
        assert_eq!(
            config,
            r#"target.x86_64-pc-windows-msvc.rustflags=["-C","link-arg=/LIBPATH:/my ext/a\"b\\c"]"#
        );
    }

    #[test]
    fn the_driver_profile_is_complete() {
        let settings = super::PROFILE_SETTINGS.join(" ");
        for key in ["inherits", "lto", "codegen-units", "panic", "debug"] {
            assert!(
                settings.contains(&format!("profile.driver.{key}=")),
                "{key}"
            );
        }
    }
}
