//! `export-program-info`: the eBPF store entries of a driver ([`crate::store`]), read from the
//! program data its signed image publishes. The image is loaded into usersim, its
//! `DriverEntry` runs, and core-sim attaches to each program type as the eBPF core would; what
//! the core reads is what the store gets (one source of truth).
//!
//! Which program types and sections a driver has comes from its manifest:
//!
//! ```toml
//! [package.metadata.ebpf-ext.store]
//! program-types = ["{22ea7b37-1043-4d0d-b60d-cafa1c7b638e}"]
//! sections = [
//!     { name = "process", program-type = "{22ea7b37-1043-4d0d-b60d-cafa1c7b638e}",
//!       attach-type = "{66e20687-9805-4458-a0db-38e220d31685}", bpf-attach-type = 11 },
//! ]
//! ```
//!
//! (`BpfProgType` of a section is the program type's own, from its published data.)
//!
//! The routines a driver declares beyond the SDK's (`[package.metadata.ebpf-ext.imports]`)
//! have no implementation on the host: during the export each is bound to a trap that says
//! on stderr which routine was called and returns `STATUS_NOT_SUPPORTED`. A driver that calls
//! none of them from `DriverEntry` (calling them later, from its hooks and helpers) exports
//! as any other; one whose `DriverEntry` fails for the refusal is reported with the
//! routines it called. The value reads as a failure only to a routine returning an NTSTATUS:
//! a routine returning BOOLEAN sees TRUE, one returning a pointer a non-NULL address, and a
//! declared data import (a kernel variable such as `PsProcessType`) is bound to the trap's
//! code, so a `DriverEntry` that uses one of those at entry misbehaves or crashes the export
//! (after the note on stderr). Such a driver's store entries are written on Windows.

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, anyhow, bail};
use ebpf_ext_core_sim::ProgramInfoClient;
use ebpf_ext_core_sim::bpf::published_btf_functions;
use ebpf_ext_sys::ntdef::GUID;
use ebpf_ext_testing::{LoadedDriver, Target, image, status};
use ebpf_ext_usersim::Kernel;
use serde_json::Value;

use crate::store::{
    BtfModuleEntry, MAX_SECTION_NAME, ProgramEntry, SectionEntry, Store, install_script,
    key_name_problem, problems, reg_file_bytes, reg_text, script_file_bytes,
};
use crate::workspace::{Driver, Workspace};

/// Parses `{xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx}` (braces optional, any case; see
/// [`GUID::parse`]), ignoring white space around it.
///
/// # Errors
/// If it is not a GUID.
pub fn parse_guid(text: &str) -> Result<GUID> {
    GUID::parse(text.trim()).ok_or_else(|| {
        anyhow!("{text:?} is not a GUID (xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx, braces optional)")
    })
}

/// What a driver's manifest says to export.
#[derive(Debug, Clone, Default)]
pub struct StoreSpec {
    /// Program types whose published data is exported.
    pub program_types: Vec<GUID>,
    /// Sections: name, program type, attach type, `bpf_attach_type`.
    pub sections: Vec<(String, GUID, GUID, u32)>,
    /// Modules whose BTF-resolved functions are exported (`btf-modules`, optional).
    pub btf_modules: Vec<GUID>,
}

impl StoreSpec {
    /// Reads `[package.metadata.ebpf-ext.store]` from a package's `cargo metadata` entry;
    /// `None` when the table is absent.
    ///
    /// # Errors
    /// If the table is malformed.
    pub fn from_metadata(metadata: &Value) -> Result<Option<StoreSpec>> {
        let table = &metadata["ebpf-ext"]["store"];
        if table.is_null() {
            return Ok(None);
        }
        let program_types = table["program-types"]
            .as_array()
            .context("[package.metadata.ebpf-ext.store] needs program-types = [\"{guid}\", ...]")?
            .iter()
            .map(|g| parse_guid(g.as_str().unwrap_or_default()))
            .collect::<Result<_>>()?;
        let sections = table["sections"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|s| {
                let name = s["name"].as_str().context("a section needs a name = \"...\"")?;
                if let Some(problem) = key_name_problem("a section", name, MAX_SECTION_NAME) {
                    bail!("{problem}");
                }
                let guid = |key: &str| {
                    let text = s[key].as_str().with_context(|| {
                        format!("section {name:?} needs {key} = \"{{guid}}\"")
                    })?;
                    parse_guid(text).with_context(|| format!("section {name:?}: {key}"))
                };
                let bpf_attach_type = s["bpf-attach-type"].as_u64().with_context(|| {
                    format!("section {name:?} needs bpf-attach-type = <number> (0: BPF_ATTACH_TYPE_UNSPEC)")
                })?;
                Ok((
                    name.to_owned(),
                    guid("program-type")?,
                    guid("attach-type")?,
                    u32::try_from(bpf_attach_type)
                        .with_context(|| format!("section {name:?}: bpf-attach-type"))?,
                ))
            })
            .collect::<Result<_>>()?;
        let btf_modules = match &table["btf-modules"] {
            Value::Null => Vec::new(),
            modules => modules
                .as_array()
                .context("btf-modules = [\"{guid}\", ...] in [package.metadata.ebpf-ext.store]")?
                .iter()
                .map(|g| parse_guid(g.as_str().unwrap_or_default()))
                .collect::<Result<_>>()?,
        };
        Ok(Some(StoreSpec {
            program_types,
            sections,
            btf_modules,
        }))
    }
}

/// The service name an `.inx` installs (`AddService = Name, ...`).
#[must_use]
pub fn service_name(inx: &str) -> Option<String> {
    inx.lines().find_map(|l| {
        let (key, value) = l.split_once('=')?;
        (key.trim() == "AddService").then(|| {
            value
                .split(',')
                .next()
                .unwrap_or_default()
                .trim()
                .to_owned()
        })
    })
}

/// Most routines a driver may declare and still be exported (each gets a trap of its own).
pub const MAX_DECLARED_ROUTINES: usize = 64;

thread_local! {
    /// The declared routines the export on this thread bound to traps, by trap number, and
    /// the ones called so far (`DriverEntry` runs on the exporting thread).
    static TRAPS: std::cell::RefCell<(Vec<String>, Vec<String>)> =
        const { std::cell::RefCell::new((Vec::new(), Vec::new())) };
}

/// `STATUS_NOT_SUPPORTED`, what a trapped routine returns.
const TRAP_STATUS: u32 = 0xC000_00BB;

/// The trap for declared routine `N`: notes the call and returns `STATUS_NOT_SUPPORTED`, a
/// failure to a routine returning an NTSTATUS (not to one returning BOOLEAN or a pointer,
/// which is why the call is reported as it happens; see the module's documentation).
extern "win64" fn trap<const N: usize>() -> u64 {
    let name = TRAPS.with_borrow_mut(|(names, called)| {
        let name = names
            .get(N)
            .cloned()
            .unwrap_or_else(|| format!("declared routine {N}"));
        called.push(name.clone());
        name
    });
    eprintln!(
        "  export: DriverEntry called {name}, a declared routine the host does not run: it returns STATUS_NOT_SUPPORTED"
    );
    u64::from(TRAP_STATUS)
}

macro_rules! traps {
    ($($n:literal)*) => { [$(trap::<$n> as extern "win64" fn() -> u64),*] };
}

/// One trap per declared routine.
static TRAP_FUNCTIONS: [extern "win64" fn() -> u64; MAX_DECLARED_ROUTINES] = traps!(
    0 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20 21 22 23 24 25 26 27 28 29 30 31
    32 33 34 35 36 37 38 39 40 41 42 43 44 45 46 47 48 49 50 51 52 53 54 55 56 57 58 59 60 61
    62 63
);

/// Binds each routine of `declared` to its own trap, for this thread's export: the
/// routines (module, name) in trap order.
///
/// # Errors
/// If there are more than [`MAX_DECLARED_ROUTINES`].
fn declared_traps(declared: &[(String, Vec<String>)]) -> Result<Vec<(String, String)>> {
    let routines: Vec<(String, String)> = declared
        .iter()
        .flat_map(|(module, names)| names.iter().map(move |n| (module.clone(), n.clone())))
        .collect();
    if routines.len() > MAX_DECLARED_ROUTINES {
        bail!(
            "{} declared routines; the export binds at most {MAX_DECLARED_ROUTINES}",
            routines.len()
        );
    }
    TRAPS.with_borrow_mut(|(names, called)| {
        *names = routines.iter().map(|(m, n)| format!("{m}!{n}")).collect();
        called.clear();
    });
    Ok(routines)
}

/// The declared routines this thread's export called through their traps.
fn trapped_calls() -> Vec<String> {
    TRAPS.with_borrow(|(_, called)| called.clone())
}

/// What the export reports when `DriverEntry` of `sys` returns `status`, having called the
/// declared routines `called` (through their traps).
fn driver_entry_failed(sys: &Path, status: i32, called: &[String]) -> String {
    let trapped = if called.is_empty() {
        String::new()
    } else {
        format!(
            "; it called {}, which the export does not run (declared routines return STATUS_NOT_SUPPORTED here): call them after DriverEntry, or write the store entries on Windows",
            called.join(", ")
        )
    };
    format!(
        "{}: DriverEntry failed: {}{trapped}",
        sys.display(),
        status::describe(status)
    )
}

/// Loads the image at `sys` into a fresh usersim kernel on this thread, runs its
/// `DriverEntry` as `service`, and reads each program type's published data, and each BTF
/// module's published functions, as the core does. The driver is unloaded again. The routines
/// of `declared` (those the driver declares beyond the SDK's) are bound to traps that return
/// `STATUS_NOT_SUPPORTED` (see the module's documentation).
///
/// # Errors
/// If the image does not load, `DriverEntry` fails (naming the declared routines it called),
/// or a program type or module is not published.
pub fn published(
    sys: &Path,
    service: &str,
    program_types: &[GUID],
    btf_modules: &[GUID],
    declared: &[(String, Vec<String>)],
) -> Result<(Vec<ProgramEntry>, Vec<BtfModuleEntry>)> {
    let routines = declared_traps(declared)?;
    let trap_of = |module: &str, name: &str| {
        let index = routines
            .iter()
            .position(|(m, n)| m.eq_ignore_ascii_case(module) && n == name)?;
        TRAP_FUNCTIONS.get(index).map(|trap| *trap as usize)
    };
    let kernel = Kernel::new();
    let loaded = image::load_path_resolving(&kernel, sys, &trap_of).map_err(|e| anyhow!(e))?;
    let entries = {
        let driver = LoadedDriver::load(Target::Image(&loaded.image), service)
            .map_err(|s| anyhow!(driver_entry_failed(sys, s, &trapped_calls())))?;
        let mut entries = Vec::new();
        for program_type in program_types {
            let client = ProgramInfoClient::attach(*program_type).map_err(|e| {
                anyhow!(
                    "{} publishes no program information for {} ({e}); check program-types in [package.metadata.ebpf-ext.store]",
                    sys.display(),
                    crate::store::guid_string(program_type)
                )
            })?;
            entries.push(ProgramEntry::from_program_info(&client.info()));
            drop(client);
        }
        let mut modules = Vec::new();
        for module in btf_modules {
            let functions = published_btf_functions(*module).map_err(|e| {
                anyhow!(
                    "{}: {e}; check btf-modules in [package.metadata.ebpf-ext.store]",
                    sys.display()
                )
            })?;
            modules.push(BtfModuleEntry::from_published(*module, &functions));
        }
        driver.unload();
        (entries, modules)
    };
    drop(kernel);
    loaded.image.unload();
    Ok(entries)
}

/// A driver's service name and store entries, as exported.
pub type Exported = (String, Store);

/// The store entries of `driver`, from its signed image in `out`; `None` when its manifest
/// declares no store table.
///
/// # Errors
/// As [`published`], a section naming a program type not exported, or an entry the store's
/// reader would skip or misread ([`crate::store::problems`]).
pub fn entries(driver: &Driver, out: &Path) -> Result<Option<Exported>> {
    let Some(spec) = StoreSpec::from_metadata(&driver.metadata)? else {
        return Ok(None);
    };
    let inx = driver.dir.join(format!("{}.inx", driver.name));
    let service = fs::read_to_string(&inx)
        .ok()
        .and_then(|t| service_name(&t))
        .with_context(|| format!("no AddService line in {}", inx.display()))?;
    let sys = out.join(format!("{}.sys", driver.name));
    let declared = crate::imports::declared(driver)?;
    let (programs, btf_modules) = published(
        &sys,
        &service,
        &spec.program_types,
        &spec.btf_modules,
        &declared,
    )?;
    let sections = spec
        .sections
        .iter()
        .map(|(name, program_type, attach_type, bpf_attach_type)| {
            let program = programs
                .iter()
                .find(|p| p.program_type == *program_type)
                .with_context(|| {
                    format!("section {name}: its program type is not in program-types")
                })?;
            Ok(SectionEntry {
                name: name.clone(),
                program_type: *program_type,
                attach_type: *attach_type,
                bpf_prog_type: program.bpf_prog_type,
                bpf_attach_type: *bpf_attach_type,
            })
        })
        .collect::<Result<_>>()?;
    let store = Store {
        programs,
        sections,
        btf_modules,
    };
    let problems = problems(&store);
    if !problems.is_empty() {
        bail!(
            "{}: ebpf-for-windows would not read this store as written:\n  {}",
            driver.package,
            problems.join("\n  ")
        );
    }
    Ok(Some((service, store)))
}

/// Writes `<name>.reg` and `Install-<name>.ps1` into `dir` for `driver` (its image in `out`);
/// returns the files, none when the driver declares no store table.
///
/// # Errors
/// As [`entries`], or a failed write.
pub fn write(driver: &Driver, out: &Path, dir: &Path) -> Result<Vec<PathBuf>> {
    let Some((service, store)) = entries(driver, out)? else {
        return Ok(Vec::new());
    };
    let reg = dir.join(format!("{}.reg", driver.name));
    fs::write(&reg, reg_file_bytes(&reg_text(&store)))?;
    let ps1 = dir.join(format!("Install-{}.ps1", driver.name));
    fs::write(
        &ps1,
        script_file_bytes(&install_script(&driver.name, &service, &store)),
    )?;
    Ok(vec![reg, ps1])
}

/// `export-program-info`: the store files of each driver `only` names (all when empty), into
/// `<root>/target/driver/` (and its package folder, when packaged).
///
/// # Errors
/// A driver without a store table among those named, or as [`write()`].
pub fn export(ws: &Workspace, only: &[String]) -> Result<Vec<PathBuf>> {
    let _held = ws.lock_output()?;
    let out = ws.output_dir();
    check_unique(ws)?;
    let mut written = Vec::new();
    let mut published = Vec::new();
    for driver in ws.select(only)? {
        if let Some((_, store)) = entries(driver, &out)? {
            published.extend(
                store
                    .programs
                    .into_iter()
                    .map(|p| (driver.package.clone(), p)),
            );
        }
    }
    unique_prog_types(&published)?;
    for driver in ws.select(only)? {
        let files = write(driver, &out, &out)?;
        if files.is_empty() {
            if only.is_empty() {
                continue;
            }
            bail!(
                "{} declares no [package.metadata.ebpf-ext.store] in {}",
                driver.package,
                driver.dir.join("Cargo.toml").display()
            );
        }
        let package = out.join(format!("{}_package", driver.name));
        if package.is_dir() {
            for file in &files {
                fs::copy(file, package.join(file.file_name().unwrap_or_default()))?;
            }
        }
        written.extend(files);
    }
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guids_parse_in_either_form() {
        let g = parse_guid("{22EA7B37-1043-4d0d-b60d-cafa1c7b638e}").expect("guid");
        assert_eq!(g, GUID::from_u128(0x22ea7b37_1043_4d0d_b60d_cafa1c7b638e));
        assert_eq!(
            parse_guid("22ea7b37-1043-4d0d-b60d-cafa1c7b638e").expect("guid"),
            g
        );
        assert!(parse_guid("{22ea7b37}").is_err());
        for lax in [
            "{{22ea7b37-1043-4d0d-b60d-cafa1c7b638e}}",
            "22ea7b3-71043-4d0d-b60d-cafa1c7b638e",
            "22ea7b371043-4d0d-b60d-cafa1c7b638e-",
            "+2ea7b37-1043-4d0d-b60d-cafa1c7b638e",
        ] {
            assert!(parse_guid(lax).is_err(), "{lax}");
        }
    }

    /// Each declared routine gets a trap of its own that notes the call under the routine's
    /// name and returns `STATUS_NOT_SUPPORTED`; a failed `DriverEntry` names them.
    #[test]
    fn declared_routines_are_trapped_by_name_and_named_when_driver_entry_fails() {
        let declared = [
            (
                "NETIO.SYS".to_owned(),
                vec!["FwpsCalloutRegister3".to_owned()],
            ),
            (
                "ntoskrnl.exe".to_owned(),
                vec![
                    "PsSetLoadImageNotifyRoutine".to_owned(),
                    "KeBugCheck".to_owned(),
                ],
            ),
        ];
        let routines = declared_traps(&declared).expect("three routines");
        assert_eq!(
            routines[1],
            (
                "ntoskrnl.exe".to_owned(),
                "PsSetLoadImageNotifyRoutine".to_owned()
            )
        );
        assert!(trapped_calls().is_empty());
        assert_eq!(TRAP_FUNCTIONS[1](), u64::from(TRAP_STATUS));
        assert_eq!(TRAP_FUNCTIONS[0](), u64::from(TRAP_STATUS));
        let called = trapped_calls();
        assert_eq!(
            called,
            [
                "ntoskrnl.exe!PsSetLoadImageNotifyRoutine",
                "NETIO.SYS!FwpsCalloutRegister3"
            ]
        );
        let message = driver_entry_failed(
            std::path::Path::new("x.sys"),
            TRAP_STATUS.cast_signed(),
            &called,
        );
        assert!(
            message.starts_with("x.sys: DriverEntry failed: "),
            "{message}"
        );
        assert!(
            message.contains("it called ntoskrnl.exe!PsSetLoadImageNotifyRoutine, NETIO.SYS!FwpsCalloutRegister3, which the export does not run"),
            "{message}"
        );
        let plain = driver_entry_failed(
            std::path::Path::new("x.sys"),
            TRAP_STATUS.cast_signed(),
            &[],
        );
        assert!(!plain.contains("it called"), "{plain}");
        let too_many = [(
            "m".to_owned(),
            (0..=MAX_DECLARED_ROUTINES)
                .map(|i| format!("r{i}"))
                .collect(),
        )];
        assert!(declared_traps(&too_many).is_err());
    }

    #[test]
    fn the_service_comes_from_the_inx() {
        let inx = "[X]\nAddService = SampleNtosEbpfExt, , SampleNtosEbpfExt.Service\n";
        assert_eq!(service_name(inx).as_deref(), Some("SampleNtosEbpfExt"));
    }

    #[test]
    fn the_manifest_table_is_read() {
        let metadata = serde_json::json!({"ebpf-ext": {"store": {
            "program-types": ["{22ea7b37-1043-4d0d-b60d-cafa1c7b638e}"],
            "sections": [{"name": "process",
                "program-type": "{22ea7b37-1043-4d0d-b60d-cafa1c7b638e}",
                "attach-type": "{66e20687-9805-4458-a0db-38e220d31685}",
                "bpf-attach-type": 11}]
        }}});
        let spec = StoreSpec::from_metadata(&metadata)
            .expect("valid")
            .expect("present");
        assert_eq!(spec.program_types.len(), 1);
        assert_eq!(spec.sections[0].0, "process");
        assert_eq!(spec.sections[0].3, 11);
        assert!(spec.btf_modules.is_empty(), "btf-modules is optional");
        let with_btf = serde_json::json!({"ebpf-ext": {"store": {
            "program-types": [],
            "btf-modules": ["{8f6c1f83-ce4c-4b58-8b91-654a29e23b7c}"]
        }}});
        let spec = StoreSpec::from_metadata(&with_btf)
            .expect("valid")
            .expect("present");
        assert_eq!(
            spec.btf_modules,
            [GUID::from_u128(0x8f6c1f83_ce4c_4b58_8b91_654a29e23b7c)]
        );
        let bad = serde_json::json!({"ebpf-ext": {"store": {
            "program-types": [], "btf-modules": "{8f6c1f83-ce4c-4b58-8b91-654a29e23b7c}"
        }}});
        assert!(StoreSpec::from_metadata(&bad).is_err(), "not a list");
        let section = |edit: &dyn Fn(&mut Value)| {
            let mut m = metadata.clone();
            edit(&mut m["ebpf-ext"]["store"]["sections"][0]);
            StoreSpec::from_metadata(&m)
                .map(|_| ())
                .map_err(|e| format!("{e:#}"))
        };
        let longest = "s".repeat(MAX_SECTION_NAME);
        assert_eq!(section(&|s| s["name"] = longest.as_str().into()), Ok(()));
        for (edit, expected) in [
            (
                &(|s: &mut Value| s["name"] = "".into()) as &dyn Fn(&mut Value),
                "a section has an empty name",
            ),
            (
                &|s| s["name"] = "s".repeat(38).into(),
                "is 38 characters long; the store reader takes at most 37",
            ),
            (&|s| s["name"] = r"a\b".into(), "printable ASCII without"),
            (&|s| s["name"] = "caf\u{e9}".into(), "printable ASCII"),
            (
                &|s| {
                    s.as_object_mut().map(|o| o.remove("bpf-attach-type"));
                },
                "section \"process\" needs bpf-attach-type = <number> (0: BPF_ATTACH_TYPE_UNSPEC)",
            ),
            (
                &|s| {
                    s.as_object_mut().map(|o| o.remove("attach-type"));
                },
                "section \"process\" needs attach-type = \"{guid}\"",
            ),
            (
                &|s| s["program-type"] = "{22ea7b37}".into(),
                "section \"process\": program-type",
            ),
        ] {
            let error = section(edit).expect_err(expected);
            assert!(error.contains(expected), "{error}");
        }
        assert!(
            StoreSpec::from_metadata(&serde_json::json!(null))
                .expect("valid")
                .is_none()
        );
    }
}

/// One identity a driver claims, for the uniqueness check: what it is and its value.
type Claim = (&'static str, String);

/// The identities each driver claims: its ETW provider GUID (`<name>.guid`), and from its
/// store table its program types, attach types, section names, `bpf_attach_type`s and BTF
/// modules.
fn claims(driver: &Driver) -> Result<Vec<Claim>> {
    let mut claims = Vec::new();
    if let Ok(guid) = fs::read_to_string(driver.dir.join(format!("{}.guid", driver.name))) {
        let guid = parse_guid(&guid)?;
        claims.push(("ETW provider GUID", crate::store::guid_string(&guid)));
    }
    if let Some(spec) = StoreSpec::from_metadata(&driver.metadata)? {
        for program_type in &spec.program_types {
            claims.push(("program type", crate::store::guid_string(program_type)));
        }
        for (name, _, attach_type, bpf_attach_type) in &spec.sections {
            // Registry key names are case-insensitive.
            claims.push(("section", name.to_ascii_lowercase()));
            claims.push(("attach type", crate::store::guid_string(attach_type)));
            // 0 (BPF_ATTACH_TYPE_UNSPEC) names no attach type, so any number of sections
            // may have it.
            if *bpf_attach_type != 0 {
                claims.push(("bpf_attach_type", bpf_attach_type.to_string()));
            }
        }
        for module in &spec.btf_modules {
            claims.push(("BTF module", crate::store::guid_string(module)));
        }
    }
    Ok(claims)
}

/// Fails when two drivers of the workspace claim the same ETW provider GUID, program type,
/// attach type, section, `bpf_attach_type` or BTF module; `bpf_prog_type`s are checked
/// by [`unique_prog_types`] from the published data. One driver may give two of its sections
/// one attach type or `bpf_attach_type`; any other claim made twice, by one driver too, is a
/// clash.
///
/// # Errors
/// Naming each clash and both drivers.
pub fn check_unique(ws: &Workspace) -> Result<()> {
    let mut seen: Vec<(Claim, &str)> = Vec::new();
    let mut clashes = Vec::new();
    for driver in &ws.drivers {
        for claim in claims(driver)? {
            // Sections of one driver may share an attach type.
            let shareable = matches!(claim.0, "attach type" | "bpf_attach_type");
            if let Some((_, other)) = seen
                .iter()
                .find(|(c, other)| *c == claim && !(shareable && *other == driver.package))
            {
                clashes.push(format!(
                    "{} {} is claimed by {other} and {}",
                    claim.0, claim.1, driver.package
                ));
            } else {
                seen.push((claim, &driver.package));
            }
        }
    }
    if !clashes.is_empty() {
        bail!(
            "drivers of {} clash:\n  {}",
            ws.root.display(),
            clashes.join("\n  ")
        );
    }
    Ok(())
}

/// Fails when two exported program types share a `bpf_prog_type`.
///
/// # Errors
/// Naming the clash.
pub fn unique_prog_types(programs: &[(String, ProgramEntry)]) -> Result<()> {
    for (i, (driver, p)) in programs.iter().enumerate() {
        if let Some((other, q)) = programs[..i]
            .iter()
            .find(|(_, q)| q.bpf_prog_type == p.bpf_prog_type)
        {
            bail!(
                "bpf_prog_type {} is published by {other} ({}) and {driver} ({})",
                p.bpf_prog_type,
                q.name,
                p.name
            );
        }
    }
    Ok(())
}

#[cfg(test)]
mod unique_tests {
    use super::*;

    fn driver(package: &str, guid: &str, attach: u32) -> Driver {
        Driver {
            package: package.into(),
            name: package.replace('-', "_"),
            version: "0.0.0".into(),
            dir: std::path::PathBuf::from("/nonexistent"),
            metadata: serde_json::json!({"ebpf-ext": {"store": {
                "program-types": [guid],
                "sections": [{"name": package, "program-type": guid,
                    "attach-type": "{66e20687-9805-4458-a0db-38e220d31685}",
                    "bpf-attach-type": attach}]
            }}}),
        }
    }

    #[test]
    fn clashing_identities_are_named() {
        let ws = Workspace {
            root: "/ws".into(),
            members: vec!["a".into(), "b".into()],
            drivers: vec![
                driver("a", "{22ea7b37-1043-4d0d-b60d-cafa1c7b638e}", 11),
                driver("b", "{22ea7b37-1043-4d0d-b60d-cafa1c7b638e}", 11),
            ],
            sdk: None,
        };
        let error = check_unique(&ws).expect_err("they clash").to_string();
        assert!(
            error.contains(
                "program type {22ea7b37-1043-4d0d-b60d-cafa1c7b638e} is claimed by a and b"
            ),
            "{error}"
        );
        assert!(error.contains("bpf_attach_type 11"), "{error}");
        assert!(error.contains("attach type {66e20687"), "{error}");
        let entry = |t| ProgramEntry {
            program_type: GUID::from_u128(t),
            name: format!("t{t}"),
            context_descriptor: [0; 4],
            bpf_prog_type: 7,
            is_privileged: false,
            helpers: Vec::new(),
        };
        let error = unique_prog_types(&[("a".into(), entry(1)), ("b".into(), entry(2))])
            .expect_err("same bpf_prog_type")
            .to_string();
        assert!(error.contains("bpf_prog_type 7"), "{error}");
    }

    #[test]
    fn one_driver_may_give_two_sections_one_attach_type() {
        let mut two = driver("a", "{22ea7b37-1043-4d0d-b60d-cafa1c7b638e}", 11);
        let first = two.metadata["ebpf-ext"]["store"]["sections"][0].clone();
        let mut second = first.clone();
        second["name"] = "a/more".into();
        two.metadata["ebpf-ext"]["store"]["sections"] = serde_json::json!([first, second]);
        let ws = Workspace {
            root: "/ws".into(),
            members: vec!["a".into()],
            drivers: vec![two],
            sdk: None,
        };
        check_unique(&ws).expect("no clash with itself");
        let mut twice = ws.drivers[0].clone();
        twice.metadata["ebpf-ext"]["store"]["sections"][1]["name"] = "A".into();
        let ws = Workspace {
            drivers: vec![twice],
            ..ws
        };
        let error = check_unique(&ws)
            .expect_err("one section name twice")
            .to_string();
        assert!(error.contains("section a is claimed by a and a"), "{error}");
    }

    #[test]
    fn section_names_clash_ignoring_case_and_unspec_attach_types_do_not() {
        let mut upper = driver("a", "{22ea7b37-1043-4d0d-b60d-cafa1c7b638e}", 0);
        upper.metadata["ebpf-ext"]["store"]["sections"][0]["name"] = "Process".into();
        let mut lower = driver("b", "{11ea7b37-1043-4d0d-b60d-cafa1c7b638e}", 0);
        lower.metadata["ebpf-ext"]["store"]["sections"][0]["name"] = "process".into();
        lower.metadata["ebpf-ext"]["store"]["sections"][0]["attach-type"] =
            "{77e20687-9805-4458-a0db-38e220d31685}".into();
        let ws = Workspace {
            root: "/ws".into(),
            members: vec!["a".into(), "b".into()],
            drivers: vec![upper, lower],
            sdk: None,
        };
        let error = check_unique(&ws).expect_err("one registry key").to_string();
        assert!(
            error.contains("section process is claimed by a and b"),
            "{error}"
        );
        assert!(
            !error.contains("bpf_attach_type"),
            "BPF_ATTACH_TYPE_UNSPEC is no identity: {error}"
        );
    }

    #[test]
    fn a_btf_module_exported_by_two_drivers_is_named() {
        let with_module = |package: &str, guid: &str| {
            let mut d = driver(package, guid, 0);
            d.metadata["ebpf-ext"]["store"]["sections"] = serde_json::json!([]);
            d.metadata["ebpf-ext"]["store"]["btf-modules"] =
                serde_json::json!(["{8f6c1f83-ce4c-4b58-8b91-654a29e23b7c}"]);
            d
        };
        let ws = Workspace {
            root: "/ws".into(),
            members: vec![],
            drivers: vec![
                with_module("a", "{22ea7b37-1043-4d0d-b60d-cafa1c7b638e}"),
                with_module("b", "{f788ef4a-207d-4dc3-85cf-0f2ea107213c}"),
            ],
            sdk: None,
        };
        let error = check_unique(&ws).expect_err("they clash").to_string();
        assert_eq!(
            error.matches("is claimed by").count(),
            1,
            "only the module: {error}"
        );
        assert!(
            error.contains(
                "BTF module {8f6c1f83-ce4c-4b58-8b91-654a29e23b7c} is claimed by a and b"
            ),
            "{error}"
        );
    }

    #[test]
    fn distinct_drivers_pass() {
        let ws = Workspace {
            root: "/ws".into(),
            members: vec![],
            drivers: vec![driver("a", "{22ea7b37-1043-4d0d-b60d-cafa1c7b638e}", 11)],
            sdk: None,
        };
        check_unique(&ws).expect("one driver cannot clash");
    }
}
