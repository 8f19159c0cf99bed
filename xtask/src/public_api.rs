//! `public-api`: the SDK crates' public API as checked-in text (`api/<crate>.txt`), so a
//! change to it shows in review and a break cannot land unnoticed.
//!
//! Each list is made from rustdoc's JSON output (`--output-format json`, unstable, enabled
//! with `RUSTC_BOOTSTRAP=1` on the rustup toolchain): one line per public item, `PATH KIND`
//! followed by the signature where there is one (functions, fields, constants, type aliases,
//! trait impls), sorted. The lines are meant for diffs, not for compiling.

extern crate alloc;

use alloc::collections::BTreeSet;
use core::fmt::Write as _;

use anyhow::{Context, Result, bail};
use serde_json::Value;

use crate::exec::{run, workspace_root};
use crate::prereqs::{Tool, command};

/// The published library crates an extension depends on. Not listed: `cargo-ebpf-ext`
/// (its commands are the API, its library serves xtask), `ebpf-ext-pe-loader` (the tool's
/// PE reader), the samples and `sample-harness`.
pub(crate) const CRATES: &[&str] = &[
    "ebpf-extension-common",
    "ebpf-ext-sys",
    "ebpf-ext-hook",
    "ebpf-ext-program-info",
    "ebpf-ext-nmr",
    "ebpf-ext-rundown",
    "ebpf-ext-pool",
    "ebpf-ext-trace",
    "ebpf-ext-map",
    "ebpf-ext-testing",
    "ebpf-ext-usersim",
    "ebpf-ext-core-sim",
];

/// The auto traits whose implementations are listed (others are unstable).
const STABLE_AUTO_TRAITS: &[&str] = &["Send", "Sync", "Unpin", "UnwindSafe", "RefUnwindSafe"];

/// Regenerates each crate's list and compares it with `api/<crate>.txt` (`bless`: writes it).
///
/// # Errors
/// If rustdoc fails, its JSON cannot be read, or (without `bless`) a list differs; the error
/// names the added and removed lines.
pub(crate) fn public_api(bless: bool) -> Result<()> {
    let root = workspace_root();
    // Its own target directory: RUSTC_BOOTSTRAP must not invalidate the main build.
    let target_dir = root.join("target").join("public-api");
    let mut report = String::new();
    for krate in CRATES {
        run(command(Tool::Cargo)
            .args(["rustdoc", "--quiet", "--package", krate, "--lib", "--"])
            .args([
                "-Zunstable-options",
                "--output-format",
                "json",
                "--cap-lints",
                "allow",
            ])
            .env("RUSTC_BOOTSTRAP", "1")
            .env("CARGO_TARGET_DIR", &target_dir))?;
        let json_path = target_dir
            .join("doc")
            .join(format!("{}.json", krate.replace('-', "_")));
        let json: Value = serde_json::from_str(
            &std::fs::read_to_string(&json_path)
                .with_context(|| format!("read {}", json_path.display()))?,
        )
        .with_context(|| format!("parse {}", json_path.display()))?;
        let actual = render(&json)?;
        let snapshot = root.join("api").join(format!("{krate}.txt"));
        let expected = std::fs::read_to_string(&snapshot).unwrap_or_default();
        if actual == expected {
            continue;
        }
        if bless {
            std::fs::create_dir_all(snapshot.parent().expect("api/"))?;
            std::fs::write(&snapshot, &actual)
                .with_context(|| format!("write {}", snapshot.display()))?;
            eprintln!("public-api: wrote {}", snapshot.display());
        } else {
            report.push_str(&difference(krate, &expected, &actual));
        }
    }
    if !report.is_empty() {
        bail!(
            "the public API differs from api/*.txt:\n{report}\nIf this is intended, bump the version as docs/RELEASING.md says (a break needs a minor bump before 1.0 and a `breaking` changelog entry), then run `cargo xtask public-api --bless` and commit api/."
        );
    }
    if !bless {
        eprintln!("public-api: {} crates match api/", CRATES.len());
    }
    Ok(())
}

/// How many changed lines a failure shows per crate.
const SHOWN: usize = 40;

/// `+ line` / `- line` for what `actual` adds to and removes from `expected`.
fn difference(krate: &str, expected: &str, actual: &str) -> String {
    let old: BTreeSet<&str> = expected.lines().collect();
    let new: BTreeSet<&str> = actual.lines().collect();
    let mut out = format!("api/{krate}.txt:\n");
    let changes: Vec<String> = old
        .difference(&new)
        .map(|line| format!("  - {line}"))
        .chain(new.difference(&old).map(|line| format!("  + {line}")))
        .collect();
    for change in changes.iter().take(SHOWN) {
        let _ = writeln!(out, "{change}");
    }
    if changes.len() > SHOWN {
        let _ = writeln!(
            out,
            "  … and {} more (`--bless`, then `git diff api/`)",
            changes.len() - SHOWN
        );
    }
    out
}

/// The sorted list of a crate's public items from rustdoc's JSON, one per line.
///
/// # Errors
/// If the JSON lacks the root module.
pub(crate) fn render(json: &Value) -> Result<String> {
    let root = json["root"].to_string();
    let index = json["index"]
        .as_object()
        .context("rustdoc JSON: no index")?;
    let krate = index.get(&root).context("rustdoc JSON: no root item")?;
    let mut walker = Walker {
        index,
        lines: BTreeSet::new(),
        stack: BTreeSet::new(),
    };
    let name = krate["name"].as_str().context("root without a name")?;
    walker.item(krate, name);
    let mut out = String::new();
    for line in walker.lines {
        out.push_str(&line);
        out.push('\n');
    }
    Ok(out)
}

struct Walker<'a> {
    index: &'a serde_json::Map<String, Value>,
    lines: BTreeSet<String>,
    /// Modules being walked, so a glob re-export of an ancestor does not loop.
    stack: BTreeSet<String>,
}

impl<'a> Walker<'a> {
    fn get(&self, id: &Value) -> Option<&'a Value> {
        self.index.get(&id.to_string())
    }

    fn emit(&mut self, path: &str, kind: &str, detail: &str) {
        let line = if detail.is_empty() {
            format!("{path} {kind}")
        } else {
            format!("{path} {kind} {detail}")
        };
        self.lines.insert(line);
    }

    /// One item, at `path` (where it is reachable from, which a re-export changes).
    fn item(&mut self, item: &Value, path: &str) {
        let Some((kind, inner)) = item["inner"].as_object().and_then(|o| o.iter().next()) else {
            return;
        };
        match kind.as_str() {
            "module" => {
                let id = item["id"].to_string();
                if !self.stack.insert(id.clone()) {
                    return;
                }
                if !inner["is_crate"].as_bool().unwrap_or(false) {
                    self.emit(path, "mod", "");
                }
                self.children(&inner["items"], path);
                self.stack.remove(&id);
            }
            "use" => self.reexport(inner, path),
            "function" => {
                let sig = function(inner);
                self.emit(path, "fn", &sig);
            }
            "struct" | "union" => {
                let generics = generics(&inner["generics"]);
                self.emit(path, kind, &generics);
                let fields = match &inner["kind"] {
                    Value::Object(o) => o
                        .get("plain")
                        .map(|p| p["fields"].clone())
                        .or_else(|| o.get("tuple").cloned())
                        .unwrap_or(Value::Null),
                    _ => inner["fields"].clone(),
                };
                self.fields(&fields, path);
                self.impls(&inner["impls"], path);
            }
            "enum" => {
                self.emit(path, "enum", &generics(&inner["generics"]));
                for id in inner["variants"].as_array().into_iter().flatten() {
                    let Some(variant) = self.get(id) else {
                        continue;
                    };
                    let name = variant["name"].as_str().unwrap_or("?");
                    let vpath = format!("{path}::{name}");
                    let v = &variant["inner"]["variant"];
                    let mut detail = String::new();
                    if let Some(d) = v["discriminant"]["expr"].as_str() {
                        detail = format!("= {d}");
                    }
                    self.emit(&vpath, "variant", &detail);
                    let fields = match &v["kind"] {
                        Value::Object(o) => o
                            .get("tuple")
                            .cloned()
                            .or_else(|| o.get("struct").map(|s| s["fields"].clone()))
                            .unwrap_or(Value::Null),
                        _ => Value::Null,
                    };
                    self.fields(&fields, &vpath);
                }
                self.impls(&inner["impls"], path);
            }
            "trait" => {
                let mut detail = String::new();
                if inner["is_unsafe"].as_bool() == Some(true) {
                    detail.push_str("unsafe ");
                }
                detail.push_str(&generics(&inner["generics"]));
                let bounds = bounds(&inner["bounds"]);
                if !bounds.is_empty() {
                    let _ = write!(detail, ": {bounds}");
                }
                self.emit(path, "trait", detail.trim());
                for id in inner["items"].as_array().into_iter().flatten() {
                    if let Some(member) = self.get(id) {
                        self.associated(member, path, "trait-");
                    }
                }
            }
            "constant" => {
                self.emit(path, "const", &ty(&inner["type"]));
            }
            "static" => {
                let mutable = if inner["is_mutable"].as_bool() == Some(true) {
                    "mut "
                } else {
                    ""
                };
                self.emit(path, "static", &format!("{mutable}{}", ty(&inner["type"])));
            }
            "type_alias" => {
                let detail = format!("{}= {}", generics(&inner["generics"]), ty(&inner["type"]));
                self.emit(path, "type", &detail);
            }
            "macro" => self.emit(path, "macro", ""),
            "proc_macro" => self.emit(path, "proc-macro", ""),
            "trait_alias" => self.emit(path, "trait-alias", ""),
            other => self.emit(path, other, ""),
        }
    }

    fn children(&mut self, items: &Value, path: &str) {
        for id in items.as_array().into_iter().flatten() {
            let Some(child) = self.get(id) else { continue };
            if child["visibility"] != "public" && !child["inner"]["use"].is_object() {
                continue;
            }
            match child["name"].as_str() {
                Some(name) if !child["inner"]["use"].is_object() => {
                    let child = child.clone();
                    self.item(&child, &format!("{path}::{name}"));
                }
                _ => {
                    let child = child.clone();
                    self.item(&child, path);
                }
            }
        }
    }

    /// `pub use`: an item of this crate is listed at the new path; another crate's item is
    /// one line naming its source.
    fn reexport(&mut self, inner: &Value, path: &str) {
        let source = inner["source"].as_str().unwrap_or("?");
        let name = inner["name"].as_str().unwrap_or("?");
        let glob = inner["is_glob"].as_bool() == Some(true);
        let target = self
            .get(&inner["id"])
            .filter(|t| t["crate_id"] == 0)
            .cloned();
        match (target, glob) {
            (Some(target), true) => {
                if let Some(items) = target["inner"]["module"]["items"].as_array() {
                    let items = Value::Array(items.clone());
                    let id = target["id"].to_string();
                    if self.stack.insert(id.clone()) {
                        self.children(&items, path);
                        self.stack.remove(&id);
                    }
                } else {
                    self.emit(&format!("{path}::*"), "use", source);
                }
            }
            (Some(target), false) => self.item(&target, &format!("{path}::{name}")),
            (None, true) => self.emit(&format!("{path}::*"), "use", source),
            (None, false) => self.emit(&format!("{path}::{name}"), "use", source),
        }
    }

    fn fields(&mut self, fields: &Value, path: &str) {
        for (position, id) in fields.as_array().into_iter().flatten().enumerate() {
            let Some(field) = self.get(id) else { continue };
            if field["visibility"] != "public" {
                continue;
            }
            let name = field["name"]
                .as_str()
                .map_or_else(|| position.to_string(), str::to_owned);
            let detail = ty(&field["inner"]["struct_field"]);
            self.emit(&format!("{path}::{name}"), "field", &detail);
        }
    }

    /// Inherent impls list their public members; trait impls (auto traits included, blanket
    /// impls not) one line each.
    fn impls(&mut self, impls: &Value, path: &str) {
        for id in impls.as_array().into_iter().flatten() {
            let Some(imp) = self.get(id) else { continue };
            let imp = imp["inner"]["impl"].clone();
            let synthetic = imp["is_synthetic"].as_bool() == Some(true);
            // Of the auto traits only the stable ones: `Freeze` and the like come and go
            // with the toolchain.
            if !imp["blanket_impl"].is_null()
                || (synthetic
                    && !STABLE_AUTO_TRAITS.contains(&imp["trait"]["path"].as_str().unwrap_or("")))
            {
                continue;
            }
            if imp["trait"].is_null() {
                for member in imp["items"].as_array().into_iter().flatten() {
                    let Some(member) = self.get(member) else {
                        continue;
                    };
                    if member["visibility"] == "public" {
                        let member = member.clone();
                        self.associated(&member, path, "");
                    }
                }
            } else {
                let mut detail = String::new();
                if imp["is_unsafe"].as_bool() == Some(true) {
                    detail.push_str("unsafe ");
                }
                if imp["is_negative"].as_bool() == Some(true) {
                    detail.push('!');
                }
                detail.push_str(&path_of(&imp["trait"]));
                if !synthetic {
                    let _ = write!(detail, " for {}", ty(&imp["for"]));
                    let wheres = where_clause(&imp["generics"]);
                    if !wheres.is_empty() {
                        let _ = write!(detail, " {wheres}");
                    }
                }
                self.emit(path, "impl", &detail);
            }
        }
    }

    /// A method, associated constant or type, of a type (`prefix` "") or trait ("trait-").
    fn associated(&mut self, member: &Value, path: &str, prefix: &str) {
        let name = member["name"].as_str().unwrap_or("?");
        let mpath = format!("{path}::{name}");
        let Some((kind, inner)) = member["inner"].as_object().and_then(|o| o.iter().next()) else {
            return;
        };
        match kind.as_str() {
            "function" => {
                let provided = if prefix.is_empty() || inner["has_body"].as_bool() != Some(true) {
                    ""
                } else {
                    " (provided)"
                };
                self.emit(
                    &mpath,
                    &format!("{prefix}fn"),
                    &format!("{}{provided}", function(inner)),
                );
            }
            "assoc_const" => {
                self.emit(&mpath, &format!("{prefix}const"), &ty(&inner["type"]));
            }
            "assoc_type" => {
                let b = bounds(&inner["bounds"]);
                let detail = if b.is_empty() {
                    String::new()
                } else {
                    format!(": {b}")
                };
                self.emit(&mpath, &format!("{prefix}type"), &detail);
            }
            other => self.emit(&mpath, &format!("{prefix}{other}"), ""),
        }
    }
}

/// `const unsafe extern "C" <T: Bound>(a: A, b: B) -> R where …`.
fn function(f: &Value) -> String {
    let mut out = qualifiers(&f["header"]);
    out.push_str(&generics(&f["generics"]));
    let inputs: Vec<String> = f["sig"]["inputs"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|input| {
            let name = input[0].as_str().unwrap_or("_");
            let t = ty(&input[1]);
            if name == "self" {
                match t.as_str() {
                    "Self" => "self".to_owned(),
                    "&Self" => "&self".to_owned(),
                    "&mut Self" => "&mut self".to_owned(),
                    _ => format!("self: {t}"),
                }
            } else {
                format!("{name}: {t}")
            }
        })
        .collect();
    let _ = write!(out, "({})", inputs.join(", "));
    if f["sig"]["is_c_variadic"].as_bool() == Some(true) {
        out.insert_str(out.len() - 1, ", ...");
    }
    if !f["sig"]["output"].is_null() {
        let _ = write!(out, " -> {}", ty(&f["sig"]["output"]));
    }
    let wheres = where_clause(&f["generics"]);
    if !wheres.is_empty() {
        let _ = write!(out, " {wheres}");
    }
    out.trim().to_owned()
}

/// `const async unsafe extern "ABI" `, each where it applies.
fn qualifiers(header: &Value) -> String {
    let mut out = String::new();
    for (flag, word) in [
        ("is_const", "const "),
        ("is_async", "async "),
        ("is_unsafe", "unsafe "),
    ] {
        if header[flag].as_bool() == Some(true) {
            out.push_str(word);
        }
    }
    match &header["abi"] {
        Value::String(s) if s == "Rust" => {}
        Value::String(s) => {
            let _ = write!(out, "extern \"{s}\" ");
        }
        Value::Object(o) => {
            if let Some(name) = o.keys().next() {
                let _ = write!(out, "extern \"{name}\" ");
            }
        }
        _ => {}
    }
    out
}

/// `<'a, T: Bound, const N: usize>` (parameters rustdoc made for `impl Trait` arguments left
/// out: they show in the argument's type).
fn generics(g: &Value) -> String {
    let params: Vec<String> = g["params"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|p| {
            let name = p["name"].as_str().unwrap_or("?");
            let kind = &p["kind"];
            if let Some(t) = kind.get("type") {
                if t["is_synthetic"].as_bool() == Some(true) {
                    return None;
                }
                let b = bounds(&t["bounds"]);
                Some(if b.is_empty() {
                    name.to_owned()
                } else {
                    format!("{name}: {b}")
                })
            } else if let Some(c) = kind.get("const") {
                Some(format!("const {name}: {}", ty(&c["type"])))
            } else if let Some(l) = kind.get("lifetime") {
                let outlives: Vec<&str> = l["outlives"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(Value::as_str)
                    .collect();
                Some(if outlives.is_empty() {
                    name.to_owned()
                } else {
                    format!("{name}: {}", outlives.join(" + "))
                })
            } else {
                Some(name.to_owned())
            }
        })
        .collect();
    if params.is_empty() {
        String::new()
    } else {
        format!("<{}>", params.join(", "))
    }
}

fn where_clause(g: &Value) -> String {
    let predicates: Vec<String> = g["where_predicates"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|p| {
            if let Some(b) = p.get("bound_predicate") {
                Some(format!("{}: {}", ty(&b["type"]), bounds(&b["bounds"])))
            } else if let Some(l) = p.get("lifetime_predicate") {
                let outlives: Vec<&str> = l["outlives"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(Value::as_str)
                    .collect();
                Some(format!(
                    "{}: {}",
                    l["lifetime"].as_str()?,
                    outlives.join(" + ")
                ))
            } else {
                p.get("eq_predicate")
                    .map(|e| format!("{} == {}", ty(&e["lhs"]), term(&e["rhs"])))
            }
        })
        .collect();
    if predicates.is_empty() {
        String::new()
    } else {
        format!("where {}", predicates.join(", "))
    }
}

fn bounds(b: &Value) -> String {
    b.as_array()
        .into_iter()
        .flatten()
        .map(|bound| {
            if let Some(t) = bound.get("trait_bound") {
                let modifier = match t["modifier"].as_str() {
                    Some("maybe") => "?",
                    Some("maybe_const") => "~const ",
                    _ => "",
                };
                format!("{modifier}{}", path_of(&t["trait"]))
            } else if let Some(l) = bound.get("outlives") {
                l.as_str().unwrap_or("'?").to_owned()
            } else if bound.get("use").is_some() {
                "use<..>".to_owned()
            } else {
                "?".to_owned()
            }
        })
        .collect::<Vec<_>>()
        .join(" + ")
}

/// A path as written, with its generic arguments.
fn path_of(p: &Value) -> String {
    let mut out = p["path"].as_str().unwrap_or("?").to_owned();
    let args = &p["args"];
    if let Some(a) = args.get("angle_bracketed") {
        let mut parts: Vec<String> = a["args"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|arg| {
                if let Some(l) = arg.get("lifetime") {
                    l.as_str().unwrap_or("'_").to_owned()
                } else if let Some(t) = arg.get("type") {
                    ty(t)
                } else if let Some(c) = arg.get("const") {
                    c["expr"].as_str().unwrap_or("_").to_owned()
                } else {
                    "_".to_owned()
                }
            })
            .collect();
        for c in a["constraints"].as_array().into_iter().flatten() {
            let name = c["name"].as_str().unwrap_or("?");
            if let Some(e) = c["binding"].get("equality") {
                parts.push(format!("{name} = {}", term(e)));
            } else if let Some(b) = c["binding"].get("constraint") {
                parts.push(format!("{name}: {}", bounds(b)));
            }
        }
        if !parts.is_empty() {
            let _ = write!(out, "<{}>", parts.join(", "));
        }
    } else if let Some(f) = args.get("parenthesized") {
        let inputs: Vec<String> = f["inputs"]
            .as_array()
            .into_iter()
            .flatten()
            .map(ty)
            .collect();
        let _ = write!(out, "({})", inputs.join(", "));
        if !f["output"].is_null() {
            let _ = write!(out, " -> {}", ty(&f["output"]));
        }
    }
    out
}

fn term(t: &Value) -> String {
    if let Some(t) = t.get("type") {
        ty(t)
    } else if let Some(c) = t.get("constant") {
        c["expr"].as_str().unwrap_or("_").to_owned()
    } else {
        "_".to_owned()
    }
}

/// A type as Rust writes it (unknown shapes as `_`, so a newer rustdoc degrades, never fails).
fn ty(t: &Value) -> String {
    let Some((kind, v)) = t.as_object().and_then(|o| o.iter().next()) else {
        return "_".to_owned();
    };
    match kind.as_str() {
        "resolved_path" => path_of(v),
        "generic" | "primitive" => v.as_str().unwrap_or("_").to_owned(),
        "borrowed_ref" => {
            let lifetime = v["lifetime"]
                .as_str()
                .map(|l| format!("{l} "))
                .unwrap_or_default();
            let m = if v["is_mutable"].as_bool() == Some(true) {
                "mut "
            } else {
                ""
            };
            format!("&{lifetime}{m}{}", ty(&v["type"]))
        }
        "raw_pointer" => {
            let m = if v["is_mutable"].as_bool() == Some(true) {
                "mut"
            } else {
                "const"
            };
            format!("*{m} {}", ty(&v["type"]))
        }
        "slice" => format!("[{}]", ty(v)),
        "array" => format!("[{}; {}]", ty(&v["type"]), v["len"].as_str().unwrap_or("_")),
        "tuple" => {
            let parts: Vec<String> = v.as_array().into_iter().flatten().map(ty).collect();
            if parts.len() == 1 {
                format!("({},)", parts[0])
            } else {
                format!("({})", parts.join(", "))
            }
        }
        "function_pointer" => {
            let mut sig = serde_json::Map::new();
            sig.insert("sig".into(), v["sig"].clone());
            let sig = function(&Value::Object(sig));
            format!("{}fn{sig}", qualifiers(&v["header"]))
        }
        "impl_trait" => format!("impl {}", bounds(v)),
        "dyn_trait" => {
            let mut parts: Vec<String> = v["traits"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|p| path_of(&p["trait"]))
                .collect();
            if let Some(l) = v["lifetime"].as_str() {
                parts.push(l.to_owned());
            }
            format!("dyn {}", parts.join(" + "))
        }
        "qualified_path" => {
            let self_ty = ty(&v["self_type"]);
            let name = v["name"].as_str().unwrap_or("?");
            if v["trait"].is_null() || v["trait"]["path"].as_str() == Some("") {
                format!("{self_ty}::{name}")
            } else {
                format!("<{self_ty} as {}>::{name}", path_of(&v["trait"]))
            }
        }
        "pat" => ty(&v["type"]),
        _ => "_".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A crate `demo` with a function, a struct (one public field, an inherent method, a
    /// derived trait impl and an auto-trait impl), a private item, a public module with a
    /// trait, and a re-export of the trait at the root — as rustdoc's JSON describes it.
    const FIXTURE: &str = r#"{
      "root": 0, "format_version": 57,
      "index": {
        "0": {"id": 0, "crate_id": 0, "name": "demo", "visibility": "public",
              "inner": {"module": {"is_crate": true, "items": [1, 2, 9, 10, 12], "is_stripped": false}}},
        "1": {"id": 1, "crate_id": 0, "name": "add", "visibility": "public",
              "inner": {"function": {
                "sig": {"inputs": [["a", {"primitive": "u32"}],
                                   ["b", {"borrowed_ref": {"lifetime": null, "is_mutable": false,
                                          "type": {"slice": {"primitive": "u8"}}}}]],
                        "output": {"resolved_path": {"path": "Option", "id": 99,
                          "args": {"angle_bracketed": {"args": [{"type": {"primitive": "u32"}}], "constraints": []}}}},
                        "is_c_variadic": false},
                "generics": {"params": [], "where_predicates": []},
                "header": {"is_const": true, "is_unsafe": false, "is_async": false, "abi": "Rust"},
                "has_body": true}}},
        "2": {"id": 2, "crate_id": 0, "name": "Point", "visibility": "public",
              "inner": {"struct": {"kind": {"plain": {"fields": [3, 4], "has_stripped_fields": false}},
                "generics": {"params": [], "where_predicates": []}, "impls": [5, 7, 8]}}},
        "3": {"id": 3, "crate_id": 0, "name": "x", "visibility": "public",
              "inner": {"struct_field": {"primitive": "i64"}}},
        "4": {"id": 4, "crate_id": 0, "name": "secret", "visibility": "crate",
              "inner": {"struct_field": {"primitive": "i64"}}},
        "5": {"id": 5, "crate_id": 0, "name": null, "visibility": "default",
              "inner": {"impl": {"is_unsafe": false, "generics": {"params": [], "where_predicates": []},
                "trait": null, "for": {"resolved_path": {"path": "Point", "id": 2, "args": null}},
                "items": [6], "is_negative": false, "is_synthetic": false, "blanket_impl": null}}},
        "6": {"id": 6, "crate_id": 0, "name": "norm", "visibility": "public",
              "inner": {"function": {
                "sig": {"inputs": [["self", {"borrowed_ref": {"lifetime": null, "is_mutable": false, "type": {"generic": "Self"}}}]],
                        "output": {"primitive": "f64"}, "is_c_variadic": false},
                "generics": {"params": [], "where_predicates": []},
                "header": {"is_const": false, "is_unsafe": false, "is_async": false, "abi": "Rust"},
                "has_body": true}}},
        "7": {"id": 7, "crate_id": 0, "name": null, "visibility": "default",
              "inner": {"impl": {"is_unsafe": false, "generics": {"params": [], "where_predicates": []},
                "trait": {"path": "Clone", "id": 98, "args": null},
                "for": {"resolved_path": {"path": "Point", "id": 2, "args": null}},
                "items": [], "is_negative": false, "is_synthetic": false, "blanket_impl": null}}},
        "8": {"id": 8, "crate_id": 0, "name": null, "visibility": "default",
              "inner": {"impl": {"is_unsafe": false, "generics": {"params": [], "where_predicates": []},
                "trait": {"path": "Send", "id": 97, "args": null},
                "for": {"resolved_path": {"path": "Point", "id": 2, "args": null}},
                "items": [], "is_negative": false, "is_synthetic": true, "blanket_impl": null}}},
        "9": {"id": 9, "crate_id": 0, "name": "hidden", "visibility": "crate",
              "inner": {"function": {"sig": {"inputs": [], "output": null, "is_c_variadic": false},
                "generics": {"params": [], "where_predicates": []},
                "header": {"is_const": false, "is_unsafe": false, "is_async": false, "abi": "Rust"},
                "has_body": true}}},
        "10": {"id": 10, "crate_id": 0, "name": "shapes", "visibility": "public",
              "inner": {"module": {"is_crate": false, "items": [11], "is_stripped": false}}},
        "11": {"id": 11, "crate_id": 0, "name": "Shape", "visibility": "public",
              "inner": {"trait": {"is_auto": false, "is_unsafe": true, "is_dyn_compatible": true,
                "items": [13], "generics": {"params": [], "where_predicates": []}, "bounds": [], "implementations": []}}},
        "12": {"id": 12, "crate_id": 0, "name": null, "visibility": "public",
              "inner": {"use": {"source": "shapes::Shape", "name": "Shape", "id": 11, "is_glob": false}}},
        "13": {"id": 13, "crate_id": 0, "name": "area", "visibility": "default",
              "inner": {"function": {
                "sig": {"inputs": [["self", {"borrowed_ref": {"lifetime": null, "is_mutable": false, "type": {"generic": "Self"}}}]],
                        "output": {"primitive": "f64"}, "is_c_variadic": false},
                "generics": {"params": [], "where_predicates": []},
                "header": {"is_const": false, "is_unsafe": true, "is_async": false, "abi": {"C": {"unwind": false}}},
                "has_body": false}}}
      },
      "paths": {}
    }"#;

    #[test]
    fn rustdoc_json_becomes_a_sorted_list_of_public_paths_kinds_and_signatures() {
        let json: Value = serde_json::from_str(FIXTURE).expect("fixture");
        let list = render(&json).expect("render");
        let expected = "\
demo::Point impl Clone for Point
demo::Point impl Send
demo::Point struct
demo::Point::norm fn (&self) -> f64
demo::Point::x field i64
demo::Shape trait unsafe
demo::Shape::area trait-fn unsafe extern \"C\" (&self) -> f64
demo::add fn const (a: u32, b: &[u8]) -> Option<u32>
demo::shapes mod
demo::shapes::Shape trait unsafe
demo::shapes::Shape::area trait-fn unsafe extern \"C\" (&self) -> f64
";
        assert_eq!(list, expected);
    }

    #[test]
    fn a_difference_names_the_added_and_removed_lines() {
        let d = difference("demo", "a fn\nb fn\n", "b fn\nc fn\n");
        assert_eq!(d, "api/demo.txt:\n  - a fn\n  + c fn\n");
    }
}
