//! The eBPF store: the registry keys ebpf-for-windows' user-mode library reads to verify and
//! load programs of a type (`HKCU` / `HKLM` `Software\eBPF\Providers`), written from the very
//! program data a driver publishes.
//!
//! The layout, value types and byte encodings are upstream's store helper's: `ProgramData\{guid}`
//! (`Version` 1, `Size` 64, `HelperCount`) with `TypeDescriptor` (1, 61, `Name`,
//! `ContextDescriptor` as 16 bytes, `BpfProgType`, `IsPrivileged`) and one `Helpers\<name>`
//! key per type-specific helper (1, 66, `Prototype` as 28 bytes: id, return type, five
//! argument types, each a little-endian u32; `ReallocatePacket`); `SectionData\<section>`
//! (1, 56, `ProgramType` and `AttachType` as GUIDs in memory order, `BpfProgType`,
//! `BpfAttachType`); `BtfResolvedFunctions\{module}` (1, 56) with one `Functions\<name>` key
//! per BTF-resolved function (`ReturnType`, `Arguments` as 20 bytes: five argument types,
//! each a little-endian u32, `Flags`). Never stored: implicit-context flags, global-helper
//! overrides, addresses.
//!
//! Reader rules this module honours: the reader uses the `HKCU` store whenever that key exists
//! and then never looks at `HKLM`, so both are written (the installing user's `HKCU` and
//! `HKLM`); stale `Helpers` subkeys break `HelperCount`, so every key is deleted before it is
//! written, and uninstalling deletes it.

use core::fmt::Write as _;

use ebpf_ext_sys::ebpf_windows::EBPF_BTF_RESOLVED_FUNCTION_PROVIDER_INFO_HEADER as PROVIDER_INFO;
use ebpf_ext_sys::ntdef::GUID;

/// The store's root, under `HKEY_CURRENT_USER` and `HKEY_LOCAL_MACHINE`.
pub const PROVIDERS: &str = r"Software\eBPF\Providers";

/// The roots the store is written under, in the order upstream's writers use.
pub const HIVES: [&str; 2] = ["HKEY_CURRENT_USER", "HKEY_LOCAL_MACHINE"];

/// One type-specific helper's prototype.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HelperEntry {
    /// Prototype name (the key name).
    pub name: String,
    /// `helper_id`.
    pub id: u32,
    /// `return_type`.
    pub return_type: i32,
    /// `arguments`.
    pub arguments: [i32; 5],
    /// `flags.reallocate_packet`.
    pub reallocate_packet: bool,
}

impl HelperEntry {
    /// The 28-byte `Prototype` value.
    #[must_use]
    pub fn prototype(&self) -> Vec<u8> {
        let mut bytes = Vec::with_capacity(28);
        bytes.extend_from_slice(&self.id.to_le_bytes());
        bytes.extend_from_slice(&self.return_type.to_le_bytes());
        for argument in self.arguments {
            bytes.extend_from_slice(&argument.to_le_bytes());
        }
        bytes
    }
}

/// One program type's `ProgramData\{guid}` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProgramEntry {
    /// The program type (the key name).
    pub program_type: GUID,
    /// Type descriptor `name`.
    pub name: String,
    /// Context descriptor: size, data, end, meta.
    pub context_descriptor: [i32; 4],
    /// `bpf_prog_type`.
    pub bpf_prog_type: u32,
    /// `is_privileged`.
    pub is_privileged: bool,
    /// Program-type-specific helpers.
    pub helpers: Vec<HelperEntry>,
}

impl ProgramEntry {
    /// The 16-byte `ContextDescriptor` value.
    #[must_use]
    pub fn context_descriptor_bytes(&self) -> Vec<u8> {
        self.context_descriptor
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect()
    }

    /// The entry the core-sim read from a driver's published program data (the one source of
    /// truth): what is stored, no more.
    #[must_use]
    pub fn from_program_info(info: &ebpf_ext_core_sim::ProgramInfo) -> ProgramEntry {
        let d = info.context_descriptor;
        ProgramEntry {
            program_type: info.program_type,
            name: info.name.clone(),
            context_descriptor: [d.size, d.data, d.end, d.meta],
            bpf_prog_type: info.bpf_prog_type,
            is_privileged: info.is_privileged,
            helpers: info
                .helpers
                .iter()
                .map(|h| HelperEntry {
                    name: h.name.clone(),
                    id: h.id,
                    return_type: h.return_type,
                    arguments: h.arguments,
                    reallocate_packet: h.reallocate_packet,
                })
                .collect(),
        }
    }
}

/// One `SectionData\<section>` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SectionEntry {
    /// Section name prefix (the key name).
    pub name: String,
    /// Program type.
    pub program_type: GUID,
    /// Attach type.
    pub attach_type: GUID,
    /// `bpf_prog_type`.
    pub bpf_prog_type: u32,
    /// `bpf_attach_type`.
    pub bpf_attach_type: u32,
}

/// One BTF-resolved function of a module: a `Functions\<name>` key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BtfFunctionEntry {
    /// Its name (the key name).
    pub name: String,
    /// `return_type`.
    pub return_type: i32,
    /// `arguments`.
    pub arguments: [i32; 5],
    /// `flags`.
    pub flags: u32,
}

/// One module's `BtfResolvedFunctions\{module}` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BtfModuleEntry {
    /// The module GUID (the key name): the provider's NMR module id.
    pub module: GUID,
    /// Its functions.
    pub functions: Vec<BtfFunctionEntry>,
}

impl BtfModuleEntry {
    /// The entry of what the core-sim read from a driver's BTF-resolved function provider.
    #[must_use]
    pub fn from_published(
        module: GUID,
        functions: &[ebpf_ext_core_sim::bpf::PublishedBtfFunction],
    ) -> BtfModuleEntry {
        BtfModuleEntry {
            module,
            functions: functions
                .iter()
                .map(|f| BtfFunctionEntry {
                    name: f.name.clone(),
                    return_type: f.prototype.return_type,
                    arguments: f.prototype.arguments,
                    flags: f.prototype.flags,
                })
                .collect(),
        }
    }
}

/// Everything one driver puts in the store.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Store {
    /// Program types.
    pub programs: Vec<ProgramEntry>,
    /// Sections.
    pub sections: Vec<SectionEntry>,
    /// Modules of BTF-resolved functions.
    pub btf_modules: Vec<BtfModuleEntry>,
}

/// The longest section name the store's reader enumerates: it passes a 38-character buffer,
/// terminator included, to `RegEnumKeyEx` and skips a longer name as an invalid entry.
pub const MAX_SECTION_NAME: usize = 37;

/// The longest registry key name (a helper's or a BTF-resolved function's key).
pub const MAX_KEY_NAME: usize = 255;

/// Why `name` cannot be a store key name of this `kind` at most `max` characters long, if it
/// cannot: empty, longer, or holding a `\` (which would make it a path of keys) or other than
/// printable ASCII (the reader's limits count UTF-16 units and registry names compare without
/// case, so only ASCII keeps the length and clash checks here exact).
#[must_use]
pub fn key_name_problem(kind: &str, name: &str, max: usize) -> Option<String> {
    if name.is_empty() {
        return Some(format!("{kind} has an empty name"));
    }
    if let Some(c) = name
        .chars()
        .find(|&c| c == '\\' || !(' '..='~').contains(&c))
    {
        return Some(format!(
            "{kind} {name:?} holds {c:?}; a store key name is printable ASCII without '\\'"
        ));
    }
    // Printable ASCII: as many characters as bytes.
    (name.len() > max).then(|| {
        format!(
            "{kind} {name:?} is {} characters long; the store reader takes at most {max}",
            name.len()
        )
    })
}

/// The first of `names` that repeats an earlier one, ignoring case (registry key names are
/// case-insensitive, so the two would be one key).
fn repeated<'a>(names: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    let mut seen: Vec<String> = Vec::new();
    names.into_iter().find(|name| {
        let folded = name.to_ascii_lowercase();
        let repeat = seen.contains(&folded);
        seen.push(folded);
        repeat
    })
}

/// What would make the store ebpf-for-windows reads differ from `store`, one line each: a key
/// name the reader skips or cannot hold ([`key_name_problem`]), and two helpers of a program
/// type, two functions of a module or two sections whose names differ only in case (one key
/// for both, which for helpers breaks `HelperCount` and makes the reader drop the whole
/// program type).
#[must_use]
pub fn problems(store: &Store) -> Vec<String> {
    let mut problems = Vec::new();
    for p in &store.programs {
        // A line break would end the `.reg` file's `"Name"="…"` line early.
        if let Some(c) = p.name.chars().find(|c| c.is_control()) {
            problems.push(format!(
                "program type {:?}'s name holds {c:?}; the store's Name is one line of text",
                p.name
            ));
        }
        let kind = format!("a helper of program type {:?}", p.name);
        problems.extend(
            p.helpers
                .iter()
                .filter_map(|h| key_name_problem(&kind, &h.name, MAX_KEY_NAME)),
        );
        if let Some(name) = repeated(p.helpers.iter().map(|h| h.name.as_str())) {
            problems.push(format!(
                "{kind}: two helpers are named {name:?} (ignoring case)"
            ));
        }
    }
    problems.extend(
        store
            .sections
            .iter()
            .filter_map(|s| key_name_problem("a section", &s.name, MAX_SECTION_NAME)),
    );
    if let Some(name) = repeated(store.sections.iter().map(|s| s.name.as_str())) {
        problems.push(format!("two sections are named {name:?} (ignoring case)"));
    }
    for m in &store.btf_modules {
        let kind = format!(
            "a BTF-resolved function of module {}",
            guid_string(&m.module)
        );
        problems.extend(
            m.functions
                .iter()
                .filter_map(|f| key_name_problem(&kind, &f.name, MAX_KEY_NAME)),
        );
        if let Some(name) = repeated(m.functions.iter().map(|f| f.name.as_str())) {
            problems.push(format!(
                "{kind}: two functions are named {name:?} (ignoring case)"
            ));
        }
    }
    problems
}

/// A registry value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    /// `REG_DWORD`.
    Dword(u32),
    /// `REG_SZ`.
    String(String),
    /// `REG_BINARY`.
    Binary(Vec<u8>),
}

/// A key (relative to a hive) and its values, in writing order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Key {
    /// Path below the hive (`Software\eBPF\Providers\...`).
    pub path: String,
    /// Values, by name.
    pub values: Vec<(String, Value)>,
}

/// `{22ea7b37-1043-4d0d-b60d-cafa1c7b638e}`: lower case, in braces, as `UuidToString` and the
/// store's key names have it.
#[must_use]
pub fn guid_string(g: &GUID) -> String {
    let d = g.Data4;
    format!(
        "{{{:08x}-{:04x}-{:04x}-{:02x}{:02x}-{:02x}{:02x}{:02x}{:02x}{:02x}{:02x}}}",
        g.Data1, g.Data2, g.Data3, d[0], d[1], d[2], d[3], d[4], d[5], d[6], d[7]
    )
}

/// A GUID's 16 bytes in memory order (Data1, Data2, Data3 little-endian, then Data4).
#[must_use]
pub fn guid_bytes(g: &GUID) -> Vec<u8> {
    g.to_bytes_le().to_vec()
}

fn dword(name: &str, value: u32) -> (String, Value) {
    (name.to_owned(), Value::Dword(value))
}

/// The key of a module's BTF-resolved functions.
fn btf_root(module: &GUID) -> String {
    format!(r"{PROVIDERS}\BtfResolvedFunctions\{}", guid_string(module))
}

/// The keys to delete before writing (and on uninstall): each program type's, section's and
/// module's whole key, so no stale helper or function subkey survives.
#[must_use]
pub fn roots(store: &Store) -> Vec<String> {
    store
        .programs
        .iter()
        .map(|p| format!(r"{PROVIDERS}\ProgramData\{}", guid_string(&p.program_type)))
        .chain(
            store
                .sections
                .iter()
                .map(|s| format!(r"{PROVIDERS}\SectionData\{}", s.name)),
        )
        .chain(store.btf_modules.iter().map(|m| btf_root(&m.module)))
        .collect()
}

/// Every key and value, in writing order (parents first).
#[must_use]
pub fn keys(store: &Store) -> Vec<Key> {
    let mut keys = Vec::new();
    for p in &store.programs {
        let root = format!(r"{PROVIDERS}\ProgramData\{}", guid_string(&p.program_type));
        let helper_count = u32::try_from(p.helpers.len()).unwrap_or(u32::MAX);
        keys.push(Key {
            path: root.clone(),
            values: vec![
                dword("Version", 1),
                dword("Size", 64),
                dword("HelperCount", helper_count),
            ],
        });
        keys.push(Key {
            path: format!(r"{root}\TypeDescriptor"),
            values: vec![
                dword("Version", 1),
                dword("Size", 61),
                ("Name".to_owned(), Value::String(p.name.clone())),
                (
                    "ContextDescriptor".to_owned(),
                    Value::Binary(p.context_descriptor_bytes()),
                ),
                dword("BpfProgType", p.bpf_prog_type),
                dword("IsPrivileged", u32::from(p.is_privileged)),
            ],
        });
        for h in &p.helpers {
            keys.push(Key {
                path: format!(r"{root}\Helpers\{}", h.name),
                values: vec![
                    dword("Version", 1),
                    dword("Size", 66),
                    ("Prototype".to_owned(), Value::Binary(h.prototype())),
                    dword("ReallocatePacket", u32::from(h.reallocate_packet)),
                ],
            });
        }
    }
    for s in &store.sections {
        keys.push(Key {
            path: format!(r"{PROVIDERS}\SectionData\{}", s.name),
            values: vec![
                dword("Version", 1),
                dword("Size", 56),
                (
                    "ProgramType".to_owned(),
                    Value::Binary(guid_bytes(&s.program_type)),
                ),
                (
                    "AttachType".to_owned(),
                    Value::Binary(guid_bytes(&s.attach_type)),
                ),
                dword("BpfProgType", s.bpf_prog_type),
                dword("BpfAttachType", s.bpf_attach_type),
            ],
        });
    }
    for m in &store.btf_modules {
        let root = btf_root(&m.module);
        keys.push(Key {
            path: root.clone(),
            values: vec![
                dword("Version", u32::from(PROVIDER_INFO.version)),
                dword(
                    "Size",
                    u32::try_from(PROVIDER_INFO.size).unwrap_or(u32::MAX),
                ),
            ],
        });
        for f in &m.functions {
            keys.push(Key {
                path: format!(r"{root}\Functions\{}", f.name),
                values: vec![
                    dword("ReturnType", f.return_type.cast_unsigned()),
                    (
                        "Arguments".to_owned(),
                        Value::Binary(f.arguments.iter().flat_map(|a| a.to_le_bytes()).collect()),
                    ),
                    dword("Flags", f.flags),
                ],
            });
        }
    }
    keys
}

fn reg_escape(s: &str) -> String {
    s.replace('\\', r"\\").replace('"', "\\\"")
}

/// The `.reg` text (write it with [`reg_file_bytes`]): for each hive, first the deletion of
/// every key this store owns, then every key and value.
#[must_use]
pub fn reg_text(store: &Store) -> String {
    let mut text = String::from("Windows Registry Editor Version 5.00\r\n");
    for hive in HIVES {
        for root in roots(store) {
            let _ = write!(text, "\r\n[-{hive}\\{root}]\r\n");
        }
        for key in keys(store) {
            let _ = write!(text, "\r\n[{hive}\\{}]\r\n", key.path);
            for (name, value) in &key.values {
                let value = match value {
                    Value::Dword(v) => format!("dword:{v:08x}"),
                    Value::String(s) => format!("\"{}\"", reg_escape(s)),
                    Value::Binary(b) => format!(
                        "hex:{}",
                        b.iter()
                            .map(|b| format!("{b:02x}"))
                            .collect::<Vec<_>>()
                            .join(",")
                    ),
                };
                let _ = write!(text, "\"{}\"={value}\r\n", reg_escape(name));
            }
        }
    }
    text
}

/// The `.reg` file's bytes: UTF-16LE with a byte-order mark, as `regedit` writes them.
#[must_use]
pub fn reg_file_bytes(text: &str) -> Vec<u8> {
    let mut bytes = vec![0xFF, 0xFE];
    for unit in text.encode_utf16() {
        bytes.extend_from_slice(&unit.to_le_bytes());
    }
    bytes
}

/// The bytes of a PowerShell script file: UTF-8 after a byte order mark. Without one,
/// Windows PowerShell 5.1 (what `powershell.exe` and `Invoke-Command` run) reads a script in
/// the ANSI code page, where the UTF-8 bytes of a name such as `ESPAÑA` hold a byte it takes
/// for a closing single quote.
#[must_use]
pub fn script_file_bytes(text: &str) -> Vec<u8> {
    let mut bytes = vec![0xEF, 0xBB, 0xBF];
    bytes.extend_from_slice(text.as_bytes());
    bytes
}

/// A parsed `.reg` file: deleted keys and written keys, each with its hive.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Parsed {
    /// `[-HIVE\path]` lines.
    pub deleted: Vec<String>,
    /// `[HIVE\path]` sections with their values.
    pub written: Vec<(String, Vec<(String, Value)>)>,
}

/// Reads a `.reg` file's bytes (UTF-16LE with BOM) back, for checks.
///
/// # Errors
/// On anything this module does not write.
pub fn parse_reg(bytes: &[u8]) -> Result<Parsed, String> {
    let body = bytes
        .strip_prefix(&[0xFF, 0xFE])
        .ok_or("no UTF-16LE byte-order mark")?;
    let units: Vec<u16> = body
        .chunks_exact(2)
        .map(|p| u16::from_le_bytes([p[0], p[1]]))
        .collect();
    let text = String::from_utf16(&units).map_err(|e| e.to_string())?;
    let mut lines = text.split("\r\n");
    if lines.next() != Some("Windows Registry Editor Version 5.00") {
        return Err("no regedit 5 header".into());
    }
    let mut parsed = Parsed::default();
    for line in lines.filter(|l| !l.is_empty()) {
        if let Some(key) = line.strip_prefix("[-").and_then(|l| l.strip_suffix(']')) {
            parsed.deleted.push(key.to_owned());
        } else if let Some(key) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            parsed.written.push((key.to_owned(), Vec::new()));
        } else {
            let (name, value) = line
                .strip_prefix('"')
                .and_then(|l| l.split_once("\"="))
                .ok_or_else(|| format!("not a value line: {line:?}"))?;
            let value = if let Some(hex) = value.strip_prefix("dword:") {
                Value::Dword(u32::from_str_radix(hex, 16).map_err(|e| e.to_string())?)
            } else if let Some(hex) = value.strip_prefix("hex:") {
                Value::Binary(
                    hex.split(',')
                        .map(|b| u8::from_str_radix(b, 16).map_err(|e| e.to_string()))
                        .collect::<Result<_, _>>()?,
                )
            } else {
                let s = value
                    .strip_prefix('"')
                    .and_then(|v| v.strip_suffix('"'))
                    .ok_or_else(|| format!("unknown value: {value:?}"))?;
                Value::String(s.replace("\\\"", "\"").replace(r"\\", "\\"))
            };
            parsed
                .written
                .last_mut()
                .ok_or("a value before any key")?
                .1
                .push((name.replace("\\\"", "\"").replace(r"\\", "\\"), value));
        }
    }
    Ok(parsed)
}

/// `s` as a PowerShell single-quoted string: each of the characters PowerShell takes for a
/// single quote there (`'` and U+2018 to U+201B) doubled, so none ends the string.
fn ps_quote(s: &str) -> String {
    let mut quoted = String::from("'");
    for c in s.chars() {
        if matches!(c, '\'' | '\u{2018}'..='\u{201b}') {
            quoted.push(c);
        }
        quoted.push(c);
    }
    quoted.push('\'');
    quoted
}

/// `s` for the script's `<# … #>` help comment, which a `#>` in it would end.
fn ps_comment(s: &str) -> String {
    s.replace("#>", "# >")
}

/// The PowerShell install script of a package: `Install-<name>.ps1 [-Uninstall]`. Install:
/// trust the test certificate, `sc.exe create` the kernel service (or, installed before,
/// stop it and `sc.exe config` it to this package's image) and start it, then write the
/// store under `HKLM` and the installing user's `HKCU` (each owned key deleted first). Write
/// it with [`script_file_bytes`].
/// Uninstall: stop and delete the service, delete the store keys from both hives.
///
/// The store is written through .NET's `RegistryKey` (`CreateSubKey`, `SetValue`,
/// `DeleteSubKeyTree`), as upstream's store helper calls `RegCreateKeyEx`: only `\`
/// separates keys, so a section named `cgroup/connect4` is one key (PowerShell's registry
/// paths would split it at the `/`), and no name is a wildcard pattern.
#[must_use]
pub fn install_script(name: &str, service: &str, store: &Store) -> String {
    let mut s = format!(
        r"<#
.SYNOPSIS
    Installs (or with -Uninstall removes) {name}: the kernel service {service} and its eBPF
    store entries (program information, helper prototypes, sections, BTF-resolved functions) under HKLM and the
    current user's HKCU, where ebpf-for-windows' user-mode library reads them. Generated by
    cargo ebpf-ext package from the driver's published program data; run it elevated, from
    the package folder. scripts/Deploy-SampleToVm.ps1 runs it inside a test VM.
#>
param([switch] $Uninstall, [switch] $StoreOnly)
$ErrorActionPreference = 'Stop'
$here = $PSScriptRoot
$service = {service_q}
$hives = @([Microsoft.Win32.Registry]::CurrentUser, [Microsoft.Win32.Registry]::LocalMachine)
$owned = @(
",
        name = ps_comment(name),
        service = ps_comment(service),
        service_q = ps_quote(service)
    );
    for root in roots(store) {
        let _ = writeln!(s, "    {}", ps_quote(&root));
    }
    s.push_str(
        r#")
function Clear-Store {
    foreach ($hive in $hives) {
        foreach ($key in $owned) { $hive.DeleteSubKeyTree($key, $false) }
    }
}
function Set-Dword($key, $name, [int] $value) { $key.SetValue($name, $value, [Microsoft.Win32.RegistryValueKind]::DWord) }
function Set-String($key, $name, [string] $value) { $key.SetValue($name, $value, [Microsoft.Win32.RegistryValueKind]::String) }
function Set-Binary($key, $name, [byte[]] $value) { $key.SetValue($name, $value, [Microsoft.Win32.RegistryValueKind]::Binary) }

if ($Uninstall) {
    if (-not $StoreOnly -and (Get-Service $service -ErrorAction SilentlyContinue)) {
        Stop-Service $service -ErrorAction SilentlyContinue
        sc.exe delete $service | Out-Host
    }
    Clear-Store
    Write-Host "removed $service and its eBPF store entries"
    return
}

if (-not $StoreOnly) {
    Import-Certificate -FilePath (Join-Path $here 'EbpfExtLocalTestCert.cer') -CertStoreLocation Cert:\LocalMachine\Root | Out-Null
    Import-Certificate -FilePath (Join-Path $here 'EbpfExtLocalTestCert.cer') -CertStoreLocation Cert:\LocalMachine\TrustedPublisher | Out-Null
"#,
    );
    let _ = writeln!(
        s,
        "    $image = Join-Path $here {}",
        ps_quote(&format!("{name}.sys"))
    );
    s.push_str(
        r#"    if (Get-Service $service -ErrorAction SilentlyContinue) {
        # Installed before: unload the running image and point the service at this one.
        Stop-Service $service
        sc.exe config $service type= kernel start= demand binpath= $image | Out-Host
    } else {
        sc.exe create $service type= kernel start= demand binpath= $image | Out-Host
    }
    # A native command's failure does not stop the script by itself.
    if ($LASTEXITCODE -ne 0) { throw "sc.exe could not set up $service ($LASTEXITCODE)" }
    $started = $false
    foreach ($attempt in 1..10) {
        try { Start-Service $service; $started = $true; break } catch { Start-Sleep -Seconds 1 }
    }
    if (-not $started) { sc.exe query $service | Out-Host; throw "$service did not start" }
}

Clear-Store
foreach ($hive in $hives) {
"#,
    );
    for key in keys(store) {
        let _ = writeln!(s, "    $k = $hive.CreateSubKey({})", ps_quote(&key.path));
        for (value_name, value) in &key.values {
            let line = match value {
                // A REG_DWORD is 32 bits; `SetValue` takes them as an `Int32`.
                Value::Dword(v) => {
                    format!("Set-Dword $k {} {}", ps_quote(value_name), v.cast_signed())
                }
                Value::String(v) => {
                    format!("Set-String $k {} {}", ps_quote(value_name), ps_quote(v))
                }
                Value::Binary(b) => format!(
                    "Set-Binary $k {} @({})",
                    ps_quote(value_name),
                    b.iter()
                        .map(|b| format!("0x{b:02x}"))
                        .collect::<Vec<_>>()
                        .join(",")
                ),
            };
            let _ = writeln!(s, "    {line}");
        }
        s.push_str("    $k.Close()\n");
    }
    s.push_str("}\nWrite-Host \"installed $service and its eBPF store entries (HKLM and HKCU)\"\n");
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Section E's worked example: ntosebpfext's process type (B.1, B.3).
    fn process() -> (ProgramEntry, SectionEntry) {
        let program_type = GUID::from_u128(0x22ea7b37_1043_4d0d_b60d_cafa1c7b638e);
        let helper = |name: &str, id| HelperEntry {
            name: name.to_owned(),
            id,
            return_type: 0,
            arguments: [4, 11, 2, 0, 0],
            reallocate_packet: false,
        };
        (
            ProgramEntry {
                program_type,
                name: "process".into(),
                context_descriptor: [144, 0, 8, -1],
                bpf_prog_type: 6,
                is_privileged: false,
                helpers: vec![
                    helper("bpf_process_get_image_path", 65536),
                    helper("bpf_process_get_account_name", 65537),
                    helper("bpf_process_get_account_domain", 65538),
                ],
            },
            SectionEntry {
                name: "process".into(),
                program_type,
                attach_type: GUID::from_u128(0x66e20687_9805_4458_a0db_38e220d31685),
                bpf_prog_type: 6,
                bpf_attach_type: 11,
            },
        )
    }

    /// A store of one program type and one section.
    fn store_of(program: ProgramEntry, section: SectionEntry) -> Store {
        Store {
            programs: vec![program],
            sections: vec![section],
            btf_modules: Vec::new(),
        }
    }

    fn value<'a>(parsed: &'a Parsed, key: &str, name: &str) -> &'a Value {
        let (_, values) = parsed
            .written
            .iter()
            .find(|(k, _)| k == key)
            .unwrap_or_else(|| panic!("no key {key}"));
        &values
            .iter()
            .find(|(n, _)| n == name)
            .unwrap_or_else(|| panic!("no value {name} in {key}"))
            .1
    }

    #[test]
    fn the_worked_values_of_section_e_come_back_byte_for_byte() {
        let (program, section) = process();
        let bytes = reg_file_bytes(&reg_text(&store_of(program, section)));
        let parsed = parse_reg(&bytes).expect("parses");
        for hive in HIVES {
            let root = format!(
                r"{hive}\Software\eBPF\Providers\ProgramData\{{22ea7b37-1043-4d0d-b60d-cafa1c7b638e}}"
            );
            assert!(parsed.deleted.contains(&root), "{hive}: cleared first");
            assert_eq!(value(&parsed, &root, "Version"), &Value::Dword(1));
            assert_eq!(value(&parsed, &root, "Size"), &Value::Dword(64));
            assert_eq!(value(&parsed, &root, "HelperCount"), &Value::Dword(3));
            let td = format!(r"{root}\TypeDescriptor");
            assert_eq!(value(&parsed, &td, "Size"), &Value::Dword(61));
            assert_eq!(
                value(&parsed, &td, "Name"),
                &Value::String("process".into())
            );
            assert_eq!(
                value(&parsed, &td, "ContextDescriptor"),
                &Value::Binary(vec![
                    0x90, 0, 0, 0, 0, 0, 0, 0, 8, 0, 0, 0, 0xff, 0xff, 0xff, 0xff
                ])
            );
            assert_eq!(value(&parsed, &td, "BpfProgType"), &Value::Dword(6));
            assert_eq!(value(&parsed, &td, "IsPrivileged"), &Value::Dword(0));
            let helper = format!(r"{root}\Helpers\bpf_process_get_image_path");
            assert_eq!(value(&parsed, &helper, "Size"), &Value::Dword(66));
            let mut prototype = vec![
                0, 0, 1, 0, 0, 0, 0, 0, 4, 0, 0, 0, 0x0b, 0, 0, 0, 2, 0, 0, 0,
            ];
            prototype.extend([0; 8]);
            assert_eq!(
                value(&parsed, &helper, "Prototype"),
                &Value::Binary(prototype)
            );
            assert_eq!(
                value(&parsed, &helper, "ReallocatePacket"),
                &Value::Dword(0)
            );
            let helpers = parsed
                .written
                .iter()
                .filter(|(k, _)| k.starts_with(&format!(r"{root}\Helpers\")))
                .count();
            assert_eq!(helpers, 3, "HelperCount equals the Helpers subkeys");
            let sec = format!(r"{hive}\Software\eBPF\Providers\SectionData\process");
            assert!(parsed.deleted.contains(&sec));
            assert_eq!(value(&parsed, &sec, "Size"), &Value::Dword(56));
            assert_eq!(
                value(&parsed, &sec, "ProgramType"),
                &Value::Binary(vec![
                    0x37, 0x7b, 0xea, 0x22, 0x43, 0x10, 0x0d, 0x4d, 0xb6, 0x0d, 0xca, 0xfa, 0x1c,
                    0x7b, 0x63, 0x8e
                ])
            );
            assert_eq!(value(&parsed, &sec, "BpfAttachType"), &Value::Dword(11));
        }
        assert_eq!(HIVES[0], "HKEY_CURRENT_USER", "HKCU as well as HKLM (E.1)");
    }

    #[test]
    fn names_the_reader_would_skip_or_merge_are_problems() {
        let (program, section) = process();
        let clean = store_of(program.clone(), section.clone());
        assert_eq!(problems(&clean), Vec::<String>::new());
        let mut store = clean.clone();
        store.programs[0].helpers[1].name = store.programs[0].helpers[0].name.to_uppercase();
        store.programs[0].helpers[2].name = String::new();
        store.sections.push(SectionEntry {
            name: "PROCESS".into(),
            ..section.clone()
        });
        store.sections.push(SectionEntry {
            name: "x".repeat(MAX_SECTION_NAME + 1),
            ..section
        });
        let function = |name: &str| BtfFunctionEntry {
            name: name.into(),
            return_type: 0,
            arguments: [0; 5],
            flags: 0,
        };
        store.btf_modules.push(BtfModuleEntry {
            module: GUID::from_u128(1),
            functions: vec![function("f"), function("F"), function(r"a\b")],
        });
        let found = problems(&store);
        let expected = [
            "a helper of program type \"process\": two helpers are named \"BPF_PROCESS_GET_IMAGE_PATH\" (ignoring case)",
            "a helper of program type \"process\" has an empty name",
            "two sections are named \"PROCESS\" (ignoring case)",
            "a section \"xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx\" is 38 characters long; the store reader takes at most 37",
            "a BTF-resolved function of module {00000000-0000-0000-0000-000000000001}: two functions are named \"F\" (ignoring case)",
            "a BTF-resolved function of module {00000000-0000-0000-0000-000000000001} \"a\\\\b\" holds '\\\\'; a store key name is printable ASCII without '\\'",
        ];
        for line in expected {
            assert!(
                found.iter().any(|f| f == line),
                "{line:?} not in {found:#?}"
            );
        }
        assert_eq!(found.len(), expected.len(), "{found:#?}");
    }

    #[test]
    fn the_install_script_clears_then_writes_both_hives() {
        let (program, section) = process();
        let script = install_script("my_ext", "MyExt", &store_of(program, section));
        assert!(script.contains(
            "$hives = @([Microsoft.Win32.Registry]::CurrentUser, [Microsoft.Win32.Registry]::LocalMachine)"
        ));
        assert!(script.contains(
            r"'Software\eBPF\Providers\ProgramData\{22ea7b37-1043-4d0d-b60d-cafa1c7b638e}'"
        ));
        let clear = script
            .rfind("\nClear-Store")
            .expect("clears before writing");
        let write = script.find("$k = $hive.CreateSubKey(").expect("writes");
        assert!(clear < write);
        assert!(script.contains("Set-Binary $k 'ContextDescriptor' @(0x90,0x00,0x00,0x00,0x00,0x00,0x00,0x00,0x08,0x00,0x00,0x00,0xff,0xff,0xff,0xff)"));
        assert!(script.contains("if ($Uninstall)"));
    }

    /// The script writes the store as upstream's store helper does, with `RegCreateKeyEx`'s
    /// rules: a `/` in a section name is part of one key (PowerShell's registry paths would
    /// nest `cgroup\connect4`, whose parent the reader finds without values), and a `*` or a
    /// `[` is no wildcard (PowerShell's `-Path` would expand it, in `Clear-Store` too).
    #[test]
    fn the_install_script_writes_keys_as_the_registry_api_does() {
        let (program, mut section) = process();
        section.name = "cgroup/connect4".into();
        let mut other = section.clone();
        other.name = "x*[1]".into();
        let store = Store {
            programs: vec![program],
            sections: vec![section, other],
            btf_modules: Vec::new(),
        };
        assert!(problems(&store).is_empty(), "{:?}", problems(&store));
        let script = install_script("my_ext", "MyExt", &store);
        for name in ["cgroup/connect4", "x*[1]"] {
            let key = format!(r"'Software\eBPF\Providers\SectionData\{name}'");
            assert!(
                script.contains(&format!("$k = $hive.CreateSubKey({key})")),
                "{name}: one key"
            );
            assert!(
                script.contains(&format!("    {key}\n")),
                "{name}: cleared as one key"
            );
        }
        for path_cmdlet in [
            "Join-Path $hive",
            "New-Item",
            "Remove-Item",
            "Test-Path",
            " -Path ",
        ] {
            assert!(
                !script.contains(path_cmdlet),
                "{path_cmdlet}: PowerShell path syntax for the store"
            );
        }
        assert!(script.contains("$hive.DeleteSubKeyTree($key, $false)"));
        assert!(script.contains("    $k.Close()"));
    }

    /// Installing over an earlier install stops the running driver and points the service at
    /// the new image before starting it; a failed `sc.exe` stops the script.
    #[test]
    fn a_reinstall_replaces_the_running_image() {
        let (program, section) = process();
        let script = install_script("my_ext", "MyExt", &store_of(program, section));
        let steps = [
            "    Stop-Service $service\n",
            "sc.exe config $service type= kernel start= demand binpath= $image",
            "sc.exe create $service type= kernel start= demand binpath= $image",
            "if ($LASTEXITCODE -ne 0) { throw",
            "Start-Service $service",
        ]
        .map(|step| script.find(step).unwrap_or_else(|| panic!("no {step:?}")));
        assert!(steps.is_sorted(), "in this order: {steps:?}");
        assert!(script.contains("$image = Join-Path $here 'my_ext.sys'"));
    }

    #[test]
    fn the_script_file_is_utf8_with_a_byte_order_mark() {
        let bytes = script_file_bytes("$n = 'ESPA\u{d1}A'");
        assert_eq!(bytes[..3], [0xEF, 0xBB, 0xBF]);
        assert_eq!(core::str::from_utf8(&bytes[3..]), Ok("$n = 'ESPA\u{d1}A'"));
    }

    #[test]
    fn a_dword_above_i32_max_is_written_as_its_32_bits() {
        let (program, mut section) = process();
        section.bpf_attach_type = u32::MAX;
        let script = install_script("my_ext", "MyExt", &store_of(program, section));
        assert!(
            script.contains("Set-Dword $k 'BpfAttachType' -1"),
            "SetValue takes a REG_DWORD as an Int32"
        );
    }

    #[test]
    fn names_cannot_end_the_scripts_strings_or_comment() {
        assert_eq!(ps_quote("it's"), "'it''s'");
        assert_eq!(ps_quote("it\u{2019}s"), "'it\u{2019}\u{2019}s'");
        assert_eq!(
            ps_quote("\u{2018}\u{201a}\u{201b}"),
            "'\u{2018}\u{2018}\u{201a}\u{201a}\u{201b}\u{201b}'"
        );
        let (program, section) = process();
        let script = install_script("my_ext", "Evil#>Service", &store_of(program, section));
        let comment_end = script.find("#>").expect("the help comment ends");
        assert!(
            script[..comment_end].contains("Evil# >Service"),
            "the name cannot close the comment"
        );
        assert!(script.contains("$service = 'Evil#>Service'"));
    }

    #[test]
    fn a_program_type_name_with_a_line_break_is_a_problem() {
        let (mut program, _) = process();
        program.name = "two\nlines".into();
        let store = Store {
            programs: vec![program],
            ..Store::default()
        };
        assert!(
            problems(&store).iter().any(|p| p.contains("'\\n'")),
            "{:?}",
            problems(&store)
        );
    }

    #[test]
    fn strings_with_quotes_and_backslashes_round_trip() {
        let (mut program, _) = process();
        program.name = r#"a\b"c"#.into();
        let store = Store {
            programs: vec![program],
            ..Store::default()
        };
        let parsed = parse_reg(&reg_file_bytes(&reg_text(&store))).expect("parses");
        let td = r"HKEY_LOCAL_MACHINE\Software\eBPF\Providers\ProgramData\{22ea7b37-1043-4d0d-b60d-cafa1c7b638e}\TypeDescriptor";
        assert_eq!(
            value(&parsed, td, "Name"),
            &Value::String(r#"a\b"c"#.into())
        );
    }

    #[test]
    fn a_modules_btf_resolved_functions_are_cleared_then_written() {
        let module = GUID::from_u128(0x8f6c1f83_ce4c_4b58_8b91_654a29e23b7c);
        let store = Store {
            btf_modules: vec![BtfModuleEntry {
                module,
                functions: vec![BtfFunctionEntry {
                    name: "sample_ebpf_extension_btf_lookup".into(),
                    return_type: 0,
                    arguments: [1, 9, 2, 0, 0],
                    flags: 3,
                }],
            }],
            ..Store::default()
        };
        let parsed = parse_reg(&reg_file_bytes(&reg_text(&store))).expect("parses");
        for hive in HIVES {
            let root = format!(
                r"{hive}\Software\eBPF\Providers\BtfResolvedFunctions\{{8f6c1f83-ce4c-4b58-8b91-654a29e23b7c}}"
            );
            assert!(parsed.deleted.contains(&root), "{hive}: cleared first");
            assert_eq!(value(&parsed, &root, "Version"), &Value::Dword(1));
            assert_eq!(value(&parsed, &root, "Size"), &Value::Dword(56));
            let function = format!(r"{root}\Functions\sample_ebpf_extension_btf_lookup");
            assert_eq!(value(&parsed, &function, "ReturnType"), &Value::Dword(0));
            assert_eq!(
                value(&parsed, &function, "Arguments"),
                &Value::Binary(vec![
                    1, 0, 0, 0, 9, 0, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0
                ])
            );
            assert_eq!(value(&parsed, &function, "Flags"), &Value::Dword(3));
        }
        let script = install_script("sample_ext", "SampleEbpfExt", &store);
        assert!(script.contains(
            r"'Software\eBPF\Providers\BtfResolvedFunctions\{8f6c1f83-ce4c-4b58-8b91-654a29e23b7c}'"
        ));
        assert!(script.contains("Set-Binary $k 'Arguments' @(0x01,0x00,0x00,0x00,0x09,"));
    }
}
