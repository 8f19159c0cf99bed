//! The import libraries a driver links against, generated at build time from
//! `ebpf-ext-sys`'s declarations ([`ebpf_ext_sys::imports`]) and the routines a driver
//! package declares beyond them ([`declared`]): nothing checked in to drift.
//!
//! A driver that calls a kernel routine the SDK does not declare (a WFP routine of
//! `fwpkclnt.sys` for a network extension, say) declares it in its manifest:
//!
//! ```toml
//! [package.metadata.ebpf-ext.imports]
//! "fwpkclnt.sys" = ["FwpsCalloutRegister3", "FwpsCalloutUnregisterById0"]
//! ```
//!
//! `cargo ebpf-ext build` then links it against an import library for that module, and the
//! image checks (ours and pefile's) accept imports from it. The driver declares the routine
//! itself for the driver build, `#[cfg(target_os = "windows")] unsafe extern "win64" { fn
//! FwpsCalloutUnregisterById0(id: u32) -> i32; }`, and defines a stand-in of the same
//! signature for host builds, `#[cfg(not(target_os = "windows"))] pub unsafe extern "win64"
//! fn FwpsCalloutUnregisterById0(id: u32) -> i32`, which the linked crate calls and the image
//! is bound to in binary-mode tests (`ebpf_ext_testing::image::load_with` and its
//! `StandIn`). usersim implements only the SDK's routines.

use std::collections::BTreeMap;

use anyhow::{Result, bail};

use crate::workspace::Driver;

/// The kernel routines one driver package declares beyond the SDK's: each exporting module
/// (as the image's import table will name it) and its routine names.
pub type Declared = Vec<(String, Vec<String>)>;

/// What `driver` declares in `[package.metadata.ebpf-ext.imports]` (nothing without the
/// table), sorted by module.
///
/// # Errors
/// A table that is not `"module.sys" = ["Routine", ...]` (a module with no routine
/// included); a module name that is not a file name ending in `.sys`, `.exe` or `.dll`, or
/// whose import library would be another module's; a routine name that is not a C
/// identifier, or that the SDK or another declared module already imports from another
/// module (the linker would bind either); the same module twice (names that differ only in
/// case) or a routine twice. A routine the SDK declares from the same module is accepted.
/// Routines only: an exported variable (`PsProcessType`) needs a `DATA` export, which this
/// table cannot declare.
pub fn declared(driver: &Driver) -> Result<Declared> {
    let table = &driver.metadata["ebpf-ext"]["imports"];
    if table.is_null() {
        return Ok(Vec::new());
    }
    let where_ = format!(
        "[package.metadata.ebpf-ext.imports] of {} ({})",
        driver.package,
        driver.dir.join("Cargo.toml").display()
    );
    let Some(table) = table.as_object() else {
        bail!("{where_} is not a table of \"module.sys\" = [\"Routine\", ...]");
    };
    let mut problems = Vec::new();
    let mut modules: BTreeMap<String, (String, Vec<String>)> = BTreeMap::new();
    for (module, names) in table {
        if !is_module_name(module) {
            problems.push(format!(
                "{module:?} is not a module file name (letters, digits, '_', '-', then .sys, .exe or .dll)"
            ));
        }
        let clash = stem_clash(module, sdk_modules())
            .or_else(|| stem_clash(module, modules.values().map(|m| m.0.as_str())));
        if let Some(other) = clash {
            problems.push(format!(
                "{module:?} would share the import library {}.lib with {other:?}",
                stem(module)
            ));
        }
        if modules.contains_key(&module.to_ascii_lowercase()) {
            problems.push(format!(
                "{module:?} is listed twice (module names ignore case)"
            ));
            continue;
        }
        let Some(names) = names.as_array().filter(|names| !names.is_empty()) else {
            problems.push(format!(
                "{module:?}: not a non-empty array of routine names"
            ));
            continue;
        };
        let mut routines = Vec::new();
        for name in names {
            let Some(name) = name.as_str() else {
                problems.push(format!("{module:?}: {name} is not a string"));
                continue;
            };
            let elsewhere = sdk_routines()
                .find(|(m, n)| *n == name && !m.eq_ignore_ascii_case(module))
                .map(|(m, _)| m.to_owned())
                .or_else(|| {
                    modules
                        .values()
                        .find(|(_, names)| names.iter().any(|n| n == name))
                        .map(|(m, _)| m.clone())
                });
            if !is_c_identifier(name) {
                problems.push(format!("{module:?}: {name:?} is not a C identifier"));
            } else if let Some(other) = elsewhere {
                problems.push(format!(
                    "{module:?}: {name} is imported from {other:?} already (the linker would bind either)"
                ));
            } else if routines.iter().any(|r| r == name) {
                problems.push(format!("{module:?}: {name} is listed twice"));
            } else {
                // A routine the SDK declares from this very module is allowed (a later SDK
                // may declare what a driver declared first); the libraries hold it once.
                routines.push(name.to_owned());
            }
        }
        routines.sort_unstable();
        modules.insert(module.to_ascii_lowercase(), (module.clone(), routines));
    }
    if !problems.is_empty() {
        bail!("{where_}:\n  {}", problems.join("\n  "));
    }
    Ok(modules.into_values().collect())
}

/// The modules of every declared driver, merged (a module two drivers declare gets the
/// routines of both).
///
/// # Errors
/// [`declared`]'s, for any driver; two drivers' modules that differ but would share an import
/// library (`foo.sys` and `foo.dll`).
pub fn merge(drivers: &[&Driver]) -> Result<Declared> {
    let mut merged: BTreeMap<String, (String, Vec<String>)> = BTreeMap::new();
    for driver in drivers {
        for (module, names) in declared(driver)? {
            if let Some(other) = stem_clash(&module, merged.values().map(|m| m.0.as_str())) {
                bail!(
                    "{}: {module:?} would share the import library {}.lib with {other:?}, which another driver declares",
                    driver.package,
                    stem(&module)
                );
            }
            for name in &names {
                let elsewhere = merged.values().find(|(m, routines)| {
                    !m.eq_ignore_ascii_case(&module) && routines.iter().any(|r| r == name)
                });
                if let Some((other, _)) = elsewhere {
                    bail!(
                        "{}: {name} from {module:?} is imported from {other:?} by another driver (the linker would bind either)",
                        driver.package
                    );
                }
            }
            let entry = merged
                .entry(module.to_ascii_lowercase())
                .or_insert_with(|| (module.clone(), Vec::new()));
            entry.1.extend(names);
            entry.1.sort_unstable();
            entry.1.dedup();
        }
    }
    Ok(merged.into_values().collect())
}

/// The routines the SDK's libraries export: its declarations and [`EXTRA`], with their
/// modules.
pub(crate) fn sdk_routines() -> impl Iterator<Item = (&'static str, &'static str)> {
    ebpf_ext_sys::imports()
        .map(|i| (i.module, i.name))
        .chain(EXTRA.iter().copied())
}

/// The modules the SDK imports from, and the empty libraries it links.
fn sdk_modules() -> impl Iterator<Item = &'static str> {
    sdk_routines()
        .map(|(module, _)| module)
        .chain(EMPTY.iter().copied())
}

/// Another module of `others` whose import library would have `module`'s stem.
fn stem_clash<'a>(module: &str, mut others: impl Iterator<Item = &'a str>) -> Option<String> {
    others
        .find(|other| !other.eq_ignore_ascii_case(module) && stem(other) == stem(module))
        .map(str::to_owned)
}

/// A module file name as an import table names it: `[A-Za-z0-9_-]+` then `.sys`, `.exe` or
/// `.dll` (any case).
fn is_module_name(module: &str) -> bool {
    module.rsplit_once('.').is_some_and(|(stem, extension)| {
        !stem.is_empty()
            && stem
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
            && ["sys", "exe", "dll"]
                .iter()
                .any(|e| e.eq_ignore_ascii_case(extension))
    })
}

fn is_c_identifier(name: &str) -> bool {
    let mut bytes = name.bytes();
    bytes
        .next()
        .is_some_and(|b| b.is_ascii_alphabetic() || b == b'_')
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

/// One module definition file: `LIBRARY` and `EXPORTS`, for `llvm-dlltool`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DefFile {
    /// The import library's file stem (`ntoskrnl`: `ntoskrnl.lib`).
    pub stem: String,
    /// The exporting module, as the image's import table names it (`ntoskrnl.exe`).
    pub module: String,
    /// Export names, sorted.
    pub exports: Vec<String>,
}

impl DefFile {
    /// The `.def` text.
    #[must_use]
    pub fn text(&self) -> String {
        let mut text = format!(
            "; Generated by cargo-ebpf-ext from ebpf-ext-sys's declarations.\nLIBRARY {}\nEXPORTS\n",
            self.module
        );
        for name in &self.exports {
            text.push_str("    ");
            text.push_str(name);
            text.push('\n');
        }
        text
    }
}

/// Exports a driver needs beyond the declared routines: `__chkstk` (the compiler calls it for
/// frames over 4 KiB) in `ntoskrnl.exe`.
const EXTRA: &[(&str, &str)] = &[("ntoskrnl.exe", "__chkstk")];

/// Libraries that must exist but export nothing: the tracelogging crate names `rpcrt4` (for
/// `Guid::new`, which drivers never call and fat LTO removes), and the link needs it.
const EMPTY: &[&str] = &["rpcrt4.dll"];

/// The `.def` files: one per module the SDK declares imports from, plus the empty ones.
#[must_use]
pub fn def_files() -> Vec<DefFile> {
    def_files_with(&[])
}

/// [`def_files`] and the modules and routines drivers declare ([`declared`]): a declared
/// routine of a module the SDK imports from joins that module's file (module names ignore
/// case, and the SDK's spelling is kept); another module gets a file of its own.
#[must_use]
pub fn def_files_with(declared: &[(String, Vec<String>)]) -> Vec<DefFile> {
    // Keyed by the module name, which ignores case; [`declared`] and [`merge`] keep two
    // modules from sharing an import library's stem.
    let mut modules: BTreeMap<String, (String, Vec<String>)> = BTreeMap::new();
    let mut add = |module: &str, name: Option<&str>| {
        let entry = modules
            .entry(module.to_ascii_lowercase())
            .or_insert_with(|| (module.to_owned(), Vec::new()));
        entry.1.extend(name.map(str::to_owned));
    };
    for (module, name) in sdk_routines() {
        add(module, Some(name));
    }
    for module in EMPTY {
        add(module, None);
    }
    for (module, names) in declared {
        add(module, None);
        for name in names {
            add(module, Some(name));
        }
    }
    modules
        .into_iter()
        .map(|(_, (module, mut exports))| {
            exports.sort_unstable();
            exports.dedup();
            DefFile {
                stem: stem(&module),
                module,
                exports,
            }
        })
        .collect()
}

/// `ntoskrnl.exe` → `ntoskrnl`, `NETIO.SYS` → `netio`.
fn stem(module: &str) -> String {
    module
        .rsplit_once('.')
        .map_or(module, |(stem, _)| stem)
        .to_ascii_lowercase()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_declared_import_is_exported_by_its_module() {
        let defs = def_files();
        for import in ebpf_ext_sys::imports() {
            let def = defs
                .iter()
                .find(|d| d.module == import.module)
                .expect("a .def per module");
            assert!(def.exports.iter().any(|e| e == import.name));
            assert!(def.text().contains(&format!("\n    {}\n", import.name)));
        }
        let ntoskrnl = defs
            .iter()
            .find(|d| d.stem == "ntoskrnl")
            .expect("ntoskrnl");
        assert!(ntoskrnl.exports.iter().any(|e| e == "__chkstk"));
        assert!(ntoskrnl.text().contains("LIBRARY ntoskrnl.exe\nEXPORTS\n"));
        let rpcrt4 = defs.iter().find(|d| d.stem == "rpcrt4").expect("rpcrt4");
        assert_eq!(
            (rpcrt4.module.as_str(), rpcrt4.exports.len()),
            ("rpcrt4.dll", 0)
        );
    }

    fn driver_declaring(imports: &serde_json::Value) -> Driver {
        Driver {
            package: "my-ext".into(),
            name: "my_ext".into(),
            version: "0.1.0".into(),
            dir: std::path::PathBuf::from("/nonexistent/my-ext"),
            metadata: serde_json::json!({ "ebpf-ext": { "imports": imports } }),
        }
    }

    #[test]
    fn declared_routines_get_their_own_library_or_join_the_sdks_module() {
        let wfp = driver_declaring(&serde_json::json!({
            "fwpkclnt.sys": ["FwpsCalloutUnregisterById0", "FwpsCalloutRegister3"],
            "netio.sys": ["NetioAllocateAndReferenceNetBufferList"],
        }));
        let found = declared(&wfp).expect("declared");
        assert_eq!(
            found,
            [
                (
                    "fwpkclnt.sys".to_owned(),
                    vec![
                        "FwpsCalloutRegister3".to_owned(),
                        "FwpsCalloutUnregisterById0".to_owned()
                    ]
                ),
                (
                    "netio.sys".to_owned(),
                    vec!["NetioAllocateAndReferenceNetBufferList".to_owned()]
                ),
            ]
        );
        let defs = def_files_with(&merge(&[&wfp]).expect("merged"));
        let fwpkclnt = defs.iter().find(|d| d.stem == "fwpkclnt").expect("its own");
        assert_eq!(fwpkclnt.module, "fwpkclnt.sys");
        assert!(fwpkclnt.text().contains("LIBRARY fwpkclnt.sys\nEXPORTS\n"));
        assert_eq!(fwpkclnt.exports.len(), 2);
        let netio: Vec<_> = defs.iter().filter(|d| d.stem == "netio").collect();
        assert_eq!(netio.len(), 1, "one library per module, whatever the case");
        assert_eq!(netio[0].module, "NETIO.SYS", "the SDK's spelling");
        assert!(
            netio[0]
                .exports
                .contains(&"NetioAllocateAndReferenceNetBufferList".to_owned())
        );
        assert!(netio[0].exports.contains(&"NmrRegisterProvider".to_owned()));
        assert_eq!(defs.len(), def_files().len() + 1);
        assert!(
            declared(&driver_declaring(&serde_json::Value::Null))
                .expect("none")
                .is_empty()
        );
    }

    #[test]
    fn bad_declarations_are_refused_naming_each_problem() {
        let bad = driver_declaring(&serde_json::json!({
            "fwpkclnt": ["FwpsX"],
            "ntoskrnl.dll": ["Anything"],
            "two.sys": ["1st", "ExAllocatePool2", "Same", "Same", 7, "__chkstk"],
            "list.sys": "NotAList",
            "empty.sys": [],
            "zzz.sys": ["Same"],
        }));
        let error = declared(&bad).expect_err("refused").to_string();
        for expected in [
            "/nonexistent/my-ext/Cargo.toml",
            "\"fwpkclnt\" is not a module file name",
            "\"ntoskrnl.dll\" would share the import library ntoskrnl.lib with \"ntoskrnl.exe\"",
            "\"1st\" is not a C identifier",
            "ExAllocatePool2 is imported from \"ntoskrnl.exe\" already",
            "__chkstk is imported from \"ntoskrnl.exe\" already",
            "Same is listed twice",
            "\"zzz.sys\": Same is imported from \"two.sys\" already",
            "7 is not a string",
            "\"list.sys\": not a non-empty array",
            "\"empty.sys\": not a non-empty array",
        ] {
            assert!(error.contains(expected), "{expected:?} in {error}");
        }
        let twice = driver_declaring(&serde_json::json!({"a.sys": ["A"], "A.SYS": ["B"]}));
        let error = declared(&twice).expect_err("refused").to_string();
        assert!(
            error.contains("listed twice (module names ignore case)"),
            "{error}"
        );
        let not_a_table = driver_declaring(&serde_json::json!(["a.sys"]));
        assert!(declared(&not_a_table).is_err());
        let the_sdks_own =
            driver_declaring(&serde_json::json!({"NTOSKRNL.EXE": ["ExAllocatePool2"]}));
        assert_eq!(
            declared(&the_sdks_own).expect("accepted: the same module"),
            [(
                "NTOSKRNL.EXE".to_owned(),
                vec!["ExAllocatePool2".to_owned()]
            )]
        );
        let defs = def_files_with(&merge(&[&the_sdks_own]).expect("merged"));
        let ntoskrnl = defs
            .iter()
            .find(|d| d.stem == "ntoskrnl")
            .expect("one library");
        assert_eq!(
            ntoskrnl
                .exports
                .iter()
                .filter(|e| *e == "ExAllocatePool2")
                .count(),
            1
        );
    }

    #[test]
    fn two_drivers_modules_merge_unless_they_would_share_a_library() {
        let one = driver_declaring(&serde_json::json!({"wfp.sys": ["A", "B"]}));
        let other = driver_declaring(&serde_json::json!({"WFP.SYS": ["B", "C"]}));
        let merged = merge(&[&one, &other]).expect("merged");
        assert_eq!(
            merged,
            [(
                "wfp.sys".to_owned(),
                vec!["A".into(), "B".into(), "C".into()]
            )]
        );
        let clash = driver_declaring(&serde_json::json!({"wfp.dll": ["D"]}));
        let error = merge(&[&one, &clash]).expect_err("refused").to_string();
        assert!(error.contains("wfp.lib"), "{error}");
        let same_name = driver_declaring(&serde_json::json!({"other.sys": ["A"]}));
        let error = merge(&[&one, &same_name]).expect_err("refused").to_string();
        assert!(
            error.contains("A from \"other.sys\" is imported from \"wfp.sys\" by another driver"),
            "{error}"
        );
    }

    #[test]
    fn library_stems_are_lower_case_without_extension() {
        assert_eq!(stem("NETIO.SYS"), "netio");
        assert_eq!(stem("ntoskrnl.exe"), "ntoskrnl");
    }
}
