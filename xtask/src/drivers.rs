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
use std::process::Command;

use anyhow::{Context, Result, bail};

use crate::ci::{DRIVER_TARGET, driver_toolchain};
use crate::exec::{run, workspace_root};
use crate::pe::{Image, map_symbol_rva};

/// The cargo profile driver images are built with (fat LTO, one codegen unit, abort on
/// panic: `Cargo.toml`).
pub(crate) const PROFILE: &str = "driver";
/// The pefile version the independent check installs.
const PEFILE: &str = "pefile==2024.8.26";

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

fn find_tool(names: &[&str], package: &str) -> Result<String> {
    for name in names {
        if Command::new(name).arg("--version").output().is_ok() {
            return Ok((*name).to_owned());
        }
    }
    bail!(
        "{} not found; install it with: sudo apt-get install {package}",
        names[0]
    )
}

/// Makes the import libraries from `xtask/link/*.def`.
fn import_libraries(out: &Path) -> Result<PathBuf> {
    let dlltool = find_tool(
        &["llvm-dlltool", "llvm-dlltool-19", "llvm-dlltool-14"],
        "llvm",
    )?;
    let lib_dir = out.join("lib");
    fs::create_dir_all(&lib_dir)?;
    let def_dir = workspace_root().join("xtask").join("link");
    for def in ["ntoskrnl", "netio", "rpcrt4"] {
        run(Command::new(&dlltool)
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

/// Python with pefile, in a virtual environment under `target/driver/pyenv`.
fn pefile_python(out: &Path) -> Result<PathBuf> {
    let venv = out.join("pyenv");
    let python = venv.join("bin").join("python");
    if !python.is_file() {
        run(Command::new("python3").args(["-m", "venv"]).arg(&venv)).context(
            "python3 -m venv failed; install it with: sudo apt-get install python3-venv",
        )?;
    }
    let has_pefile = Command::new(&python)
        .args(["-c", "import pefile"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !has_pefile {
        run(Command::new(&python).args(["-m", "pip", "install", "--quiet", PEFILE]))?;
    }
    Ok(python)
}

/// Checks an image with this crate's reader and with pefile; fails listing every problem.
pub(crate) fn check_image(sys: &Path, map: &Path, out: &Path) -> Result<()> {
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
    let imports = image.imports()?;
    eprintln!(
        "  xtask: ok   {}: native subsystem, entry DriverEntry at {:#x}, FORCE_INTEGRITY, no W+X section, checksum {:#x}, imports {}",
        sys.file_name().unwrap_or_default().to_string_lossy(),
        image.entry_rva,
        image.stored_checksum(),
        imports
            .iter()
            .map(|(m, names)| format!("{m} ({})", names.len()))
            .collect::<Vec<_>>()
            .join(", ")
    );
    let python = pefile_python(out)?;
    let script = workspace_root().join("xtask").join("pecheck.py");
    run(Command::new(python)
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
    let (cargo, rustc) = driver_toolchain()?;
    find_tool(&["lld-link"], "lld")?;
    let out = output_dir();
    fs::create_dir_all(&out)?;
    let lib_dir = import_libraries(&out)?;
    let target_dir = root.join("target");
    let mut built = Vec::new();
    for driver in drivers()? {
        if only.is_some_and(|p| p != driver.package) {
            continue;
        }
        run(Command::new(&cargo)
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
            .env("RUSTC", &rustc)
            .env_remove("RUSTUP_TOOLCHAIN")
            .env_remove("CARGO")
            .env_remove("RUSTFLAGS")
            .env("CARGO_TARGET_DIR", &target_dir)
            .env(
                "CARGO_TARGET_X86_64_PC_WINDOWS_MSVC_RUSTFLAGS",
                link_flags(&lib_dir),
            ))?;
        let artifacts = target_dir.join(DRIVER_TARGET).join(PROFILE);
        let dll = artifacts.join(format!("{}.dll", driver.name));
        let mut image =
            Image::parse(fs::read(&dll).with_context(|| format!("read {}", dll.display()))?)?;
        for change in image.fix_sections() {
            eprintln!("  fix-up: {change}");
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
        check_image(&sys, &map, &out)?;
        built.push(sys);
    }
    if built.is_empty() {
        bail!("no driver crate matched");
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
        let openssl = find_tool(&["openssl"], "openssl")?;
        run(Command::new(&openssl)
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
        run(Command::new(&openssl)
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
    let osslsigncode = find_tool(&["osslsigncode"], "osslsigncode")?;
    let tmp = file.with_extension("signing");
    let _ = fs::remove_file(&tmp);
    // Signing again replaces the signature rather than adding one.
    let is_pe = file.extension().is_some_and(|e| e == "sys");
    let input = if is_pe && is_signed(file)? {
        let unsigned = file.with_extension("unsigned");
        let _ = fs::remove_file(&unsigned);
        run(Command::new(&osslsigncode)
            .arg("remove-signature")
            .arg("-in")
            .arg(file)
            .arg("-out")
            .arg(&unsigned))?;
        unsigned
    } else {
        file.to_path_buf()
    };
    run(Command::new(&osslsigncode)
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
    run(Command::new(&osslsigncode)
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
        check_image(&sys, &map, &out).context("the signed image fails its checks")?;
        signed.push(sys);
    }
    Ok(signed)
}

fn is_signed(sys: &Path) -> Result<bool> {
    let bytes = fs::read(sys)?;
    let image = Image::parse(bytes)?;
    Ok(image.has_signature())
}

/// Stamps `DriverVer` into an `.inx` template.
fn stamp_inf(inx: &str, version: &str) -> String {
    let date = Command::new("date").arg("+%m/%d/%Y").output().map_or_else(
        |_| "01/01/2026".into(),
        |o| String::from_utf8_lossy(&o.stdout).trim().to_owned(),
    );
    inx.replace("$DRIVERVER$", &format!("{date},{version}.0"))
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
        if cfg!(windows) && Command::new("inf2cat").arg("/?").output().is_ok() {
            run(Command::new("inf2cat")
                .arg(format!("/driver:{}", dir.display()))
                .arg("/os:10_x64"))?;
            sign_file(
                &dir.join(format!("{}.cat", driver.name)),
                &driver.package,
                &out,
            )?;
        } else {
            eprintln!(
                "  {}.cat skipped: inf2cat is a Windows WDK tool; the .sys itself is signed, which is what test-signed loading (sc create) needs",
                driver.name
            );
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
