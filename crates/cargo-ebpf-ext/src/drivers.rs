//! `build-drivers`, `sign` and `package`: real `.sys` files for the sample drivers on Linux.
//!
//! The build uses Debian's `rustc-web` (with `rust-web-src`, `core`/`alloc` built from source
//! with `-Zbuild-std`) for `x86_64-pc-windows-msvc`, and links with `lld-link` as a native
//! driver against import libraries made by `llvm-dlltool` from the `.def` files in
//! `xtask/link/`. Each image then gets the section fix-ups lld-link output needs and a correct
//! checksum, and is checked twice: by this crate (`pe.rs`) and by Python `pefile`.

use core::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};

use crate::ci::{DRIVER_TARGET, driver_toolchain};
use crate::exec::{note, run, workspace_root};
use crate::pe::{Image, map_symbol_rva};
use crate::prereqs::{PEFILE, Tool, command};

/// The cargo profile driver images are built with (fat LTO, one codegen unit, abort on
/// panic: `Cargo.toml`).
pub(crate) const PROFILE: &str = "driver";

/// The variable that tells the harness where the images are (`sample_harness::binary`).
pub(crate) const DRIVER_DIR_VAR: &str = "EBPF_EXT_DRIVER_DIR";

/// The SHA-256 of `bytes`, in lower-case hex.
pub(crate) fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest as _;
    sha2::Sha256::digest(bytes)
        .iter()
        .fold(String::with_capacity(64), |mut hex, b| {
            let _ = write!(hex, "{b:02x}");
            hex
        })
}

/// A workspace crate that is a driver (it has `[package.metadata.wdk.driver-model]`).
#[derive(Debug, Clone)]
pub(crate) struct Driver {
    /// Cargo package name (`sample-netebpf-ext`).
    pub(crate) package: String,
    /// Library name (`sample_netebpf_ext`): the image is `<name>.sys`.
    pub(crate) name: String,
    /// Its directory.
    pub(crate) dir: PathBuf,
}

/// Where the driver outputs go: `target/driver/`.
pub(crate) fn output_dir() -> PathBuf {
    workspace_root().join("target").join(PROFILE)
}

/// The driver crates under `drivers/`.
pub(crate) fn drivers() -> Result<Vec<Driver>> {
    let root = workspace_root().join("drivers");
    let mut found = Vec::new();
    for entry in fs::read_dir(&root).context("read drivers/")? {
        let dir = entry?.path();
        let Ok(manifest) = fs::read_to_string(dir.join("Cargo.toml")) else {
            continue;
        };
        if !manifest.contains("[package.metadata.wdk.driver-model]") {
            continue;
        }
        let package = manifest
            .lines()
            .find_map(|l| l.strip_prefix("name = \""))
            .and_then(|l| l.strip_suffix('"'))
            .context("driver manifest without a name")?
            .to_owned();
        found.push(Driver {
            name: package.replace('-', "_"),
            package,
            dir,
        });
    }
    found.sort_by(|a, b| a.package.cmp(&b.package));
    Ok(found)
}

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

/// Makes the import libraries from `xtask/link/*.def`.
fn import_libraries(out: &Path) -> Result<PathBuf> {
    require(Tool::Dlltool)?;
    let lib_dir = out.join("lib");
    fs::create_dir_all(&lib_dir)?;
    let def_dir = workspace_root().join("xtask").join("link");
    for def in ["ntoskrnl", "netio", "rpcrt4"] {
        run(command(Tool::Dlltool)
            .args(["-m", "i386:x86-64", "-d"])
            .arg(def_dir.join(format!("{def}.def")))
            .arg("-l")
            .arg(lib_dir.join(format!("{def}.lib"))))?;
    }
    Ok(lib_dir)
}

/// The linker arguments of a native-subsystem driver.
fn link_flags(lib_dir: &Path) -> String {
    let args = [
        "/DRIVER",
        "/NODEFAULTLIB",
        "/SUBSYSTEM:NATIVE",
        "/ENTRY:DriverEntry",
        // The process-notify routine of sample-ntos-ext requires it; harmless elsewhere.
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
        "ntoskrnl.lib",
        "netio.lib",
        "rpcrt4.lib",
    ];
    let mut flags = String::from("-C linker=lld-link");
    let _ = write!(flags, " -C link-arg=/LIBPATH:{}", lib_dir.display());
    for arg in args {
        let _ = write!(flags, " -C link-arg={arg}");
    }
    flags
}

/// The virtual environment of the pefile check: `target/driver/pyenv`.
pub(crate) fn pefile_venv() -> PathBuf {
    output_dir().join("pyenv")
}

/// Makes sure the pefile check's virtual environment exists and has pefile.
fn pefile_python() -> Result<()> {
    let venv = pefile_venv();
    if !venv.join("bin").join("python").is_file() {
        run(command(Tool::Python3).args(["-m", "venv"]).arg(&venv))
            .with_context(|| format!("python3 -m venv failed; {}", Tool::Python3.hint()))?;
    }
    let has_pefile = command(Tool::PefilePython)
        .args(["-c", "import pefile"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !has_pefile {
        run(command(Tool::PefilePython).args(["-m", "pip", "install", "--quiet", PEFILE]))?;
    }
    Ok(())
}

/// Checks an image with this crate's reader and with pefile; fails listing every problem.
pub(crate) fn check_image(sys: &Path, map: &Path) -> Result<()> {
    let image = Image::parse(fs::read(sys)?)?;
    let map = fs::read_to_string(map).with_context(|| format!("read {}", map.display()))?;
    let entry = map_symbol_rva(&map, "DriverEntry");
    let problems = image.problems(entry, true);
    if !problems.is_empty() {
        bail!(
            "{} fails its checks:\n  {}",
            sys.display(),
            problems.join("\n  ")
        );
    }
    let imports = image.imports();
    note(&format!(
        "  xtask: ok   {}: native subsystem, entry DriverEntry at {:#x}, FORCE_INTEGRITY, no W+X section, checksum {:#x}, imports {}",
        sys.file_name().unwrap_or_default().to_string_lossy(),
        image.entry_rva,
        image.stored_checksum(),
        imports
            .iter()
            .map(|(m, names)| format!("{m} ({})", names.len()))
            .collect::<Vec<_>>()
            .join(", ")
    ));
    pefile_python()?;
    let script = workspace_root().join("xtask").join("pecheck.py");
    run(command(Tool::PefilePython)
        .arg(script)
        .arg(sys)
        .arg(format!("{:#x}", entry.unwrap_or(0)))
        .arg("--integrity"))
    .context("pefile disagrees with the image")
}

/// Builds every driver (or `only`), post-processes and checks the images. Returns the `.sys`
/// paths.
pub(crate) fn build_drivers(only: Option<&str>) -> Result<Vec<PathBuf>> {
    crate::prereqs::ensure()?;
    let root = workspace_root();
    driver_toolchain()?;
    let out = output_dir();
    fs::create_dir_all(&out)?;
    let lib_dir = import_libraries(&out)?;
    let target_dir = root.join("target");
    let mut built = Vec::new();
    for driver in drivers()? {
        if only.is_some_and(|p| p != driver.package) {
            continue;
        }
        let started = std::time::Instant::now();
        println!(
            "  {}: compiling (core/alloc from source on a first build), fat-LTO link ...",
            driver.package
        );
        run(command(Tool::SystemCargo)
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
            ])
            .args([
                "--profile",
                PROFILE,
                "--package",
                &driver.package,
                "--features",
                "driver",
            ])
            .env("RUSTC_BOOTSTRAP", "1")
            .env("RUSTC", Tool::SystemRustc.program())
            .env_remove("RUSTUP_TOOLCHAIN")
            .env_remove("CARGO")
            .env_remove("RUSTFLAGS")
            .env("CARGO_TARGET_DIR", &target_dir)
            .env(
                "CARGO_TARGET_X86_64_PC_WINDOWS_MSVC_RUSTFLAGS",
                link_flags(&lib_dir),
            ))?;
        println!(
            "  {}: built in {:.0} s",
            driver.package,
            started.elapsed().as_secs_f64()
        );
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
        check_image(&sys, &map)?;
        built.push(sys);
    }
    if built.is_empty() {
        bail!(
            "no driver crate matched{} in {} (a driver crate has [package.metadata.wdk.driver-model])",
            only.map(|p| format!(" {p}")).unwrap_or_default(),
            root.join("drivers").display()
        );
    }
    Ok(built)
}

/// The test-signing certificate of this checkout: created once under `target/driver/cert`.
/// Returns (certificate PEM, key PEM, certificate DER `.cer`).
fn test_certificate(out: &Path) -> Result<(PathBuf, PathBuf, PathBuf)> {
    let dir = out.join("cert");
    let (cert, key, cer) = (
        dir.join("cert.pem"),
        dir.join("key.pem"),
        dir.join("EbpfExtLocalTestCert.cer"),
    );
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
    let input = if is_pe && is_signed(file)? {
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
    fs::rename(&tmp, file)?;
    if input != file {
        fs::remove_file(&input)?;
    }
    run(command(Tool::Osslsigncode)
        .arg("verify")
        .arg("-CAfile")
        .arg(&cert)
        .arg("-in")
        .arg(file))
    .context("the signature does not verify")
}

/// Authenticode-signs each built `.sys` with the test certificate, verifies it, and checks
/// the signed image again.
pub(crate) fn sign() -> Result<Vec<PathBuf>> {
    let out = output_dir();
    let mut signed = Vec::new();
    for driver in drivers()? {
        let sys = out.join(format!("{}.sys", driver.name));
        if !sys.is_file() {
            bail!(
                "{} is not built; run cargo xtask build-drivers first",
                sys.display()
            );
        }
        sign_file(&sys, &driver.package, &out)?;
        let map = out.join(format!("{}.map", driver.name));
        check_image(&sys, &map).context("the signed image fails its checks")?;
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

/// Stamps `DriverVer` into an `.inx` template.
fn stamp_inf(inx: &str, version: &str) -> String {
    inx.replace("$DRIVERVER$", &format!("{},{version}.0", driver_date()))
}

/// Lays out `target/driver/<name>_package/` for every driver.
pub(crate) fn package() -> Result<Vec<PathBuf>> {
    let out = output_dir();
    let (_, _, cer) = test_certificate(&out)?;
    let version = env!("CARGO_PKG_VERSION");
    let mut packages = Vec::new();
    for driver in drivers()? {
        let dir = out.join(format!("{}_package", driver.name));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir)?;
        for ext in ["sys", "pdb", "map"] {
            let file = format!("{}.{ext}", driver.name);
            fs::copy(out.join(&file), dir.join(&file)).with_context(|| {
                format!("{file} missing; run cargo xtask build-drivers and sign first")
            })?;
        }
        if !is_signed(&dir.join(format!("{}.sys", driver.name)))? {
            bail!(
                "{}.sys is not signed; run cargo xtask sign first",
                driver.name
            );
        }
        let inx = fs::read_to_string(driver.dir.join(format!("{}.inx", driver.name)))
            .with_context(|| format!("{} has no {}.inx", driver.package, driver.name))?;
        fs::write(
            dir.join(format!("{}.inf", driver.name)),
            stamp_inf(&inx, version),
        )?;
        for ext in ["wprp", "guid"] {
            let file = format!("{}.{ext}", driver.name);
            fs::copy(driver.dir.join(&file), dir.join(&file))
                .with_context(|| format!("{} has no {file}", driver.package))?;
        }
        fs::copy(&cer, dir.join("EbpfExtLocalTestCert.cer"))?;
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
    #![allow(clippy::std_instead_of_alloc, reason = "host test")]
    use std::collections::BTreeSet;

    fn def_exports(name: &str) -> (String, BTreeSet<String>) {
        let path = super::workspace_root()
            .join("xtask")
            .join("link")
            .join(name);
        let text = std::fs::read_to_string(path).expect("def file");
        let library = text
            .lines()
            .find_map(|l| l.strip_prefix("LIBRARY "))
            .expect("LIBRARY line")
            .to_owned();
        let exports = text
            .lines()
            .skip_while(|l| l.trim() != "EXPORTS")
            .skip(1)
            .map(|l| l.trim().to_owned())
            .filter(|l| !l.is_empty() && !l.starts_with(';'))
            .collect();
        (library, exports)
    }

    #[test]
    fn driver_dates_are_civil_dates() {
        assert_eq!(super::civil_from_days(0), (1970, 1, 1));
        assert_eq!(super::civil_from_days(11_016), (2000, 2, 29));
        assert_eq!(super::civil_from_days(20_786), (2026, 11, 29));
        assert_eq!(super::civil_from_days(-1), (1969, 12, 31));
    }

    #[test]
    fn def_files_list_exactly_the_declared_kernel_imports() {
        for (def, module, extra) in [
            ("ntoskrnl.def", "ntoskrnl.exe", &["__chkstk"][..]),
            ("netio.def", "NETIO.SYS", &[][..]),
        ] {
            let (library, exports) = def_exports(def);
            assert_eq!(library, module);
            let declared: BTreeSet<String> = ebpf_ext_sys::imports()
                .filter(|i| i.module == module)
                .map(|i| i.name.to_owned())
                .chain(extra.iter().map(|s| (*s).to_owned()))
                .collect();
            assert_eq!(
                exports, declared,
                "{def} differs from ebpf-ext-sys's declarations"
            );
        }
        let (library, exports) = def_exports("rpcrt4.def");
        assert_eq!((library.as_str(), exports.len()), ("rpcrt4.dll", 0));
    }
}
