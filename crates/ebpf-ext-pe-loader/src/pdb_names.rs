//! Function names from an image's PDB (the procedures of its modules' debug information), and
//! the PDB's identity, to check that it belongs to the image.

use std::io::Cursor;

use pdb::FallibleIterator;

use crate::error::{Error, Result};
use crate::pe::CodeView;

/// What the loader takes from a PDB: its identity and its procedures, read by [`Pdb::read`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pdb {
    guid: [u8; 16],
    /// The DBI stream's age (the linker's), if the PDB records one.
    dbi_age: Option<u32>,
    /// The PDB stream's age, which tools that rewrite the PDB bump.
    info_age: u32,
    functions: Vec<(u32, String)>,
}

impl Pdb {
    /// Reads the PDB in `bytes`: its GUID and ages, and the RVA and name of every procedure
    /// its modules describe. A procedure whose address does not translate to an RVA is left
    /// out; a symbol that does not parse is skipped.
    ///
    /// The `pdb` crate that reads the file panics on some malformed input (an arithmetic
    /// overflow on sizes from the file, found by fuzzing); such a panic is caught and becomes
    /// the error. Its message still goes to the panic hook, which prints it. The panic needs
    /// overflow checks in the `pdb` crate: this workspace's manifest keeps them on in release
    /// builds too, and a workspace that turns them off may read such a file as a PDB with
    /// wrong contents instead.
    ///
    /// # Errors
    /// [`Error::Pdb`] if `bytes` are not a PDB, or one of the streams read is malformed.
    pub fn read(bytes: &[u8]) -> Result<Pdb> {
        match std::panic::catch_unwind(|| read(bytes)) {
            Ok(read) => read.map_err(|e| Error::Pdb(e.to_string())),
            Err(panic) => {
                let message = panic
                    .downcast_ref::<&str>()
                    .copied()
                    .or_else(|| panic.downcast_ref::<String>().map(String::as_str))
                    .unwrap_or("no message");
                Err(Error::Pdb(format!("the PDB reader panicked: {message}")))
            }
        }
    }

    /// Whether this is the PDB `image` was linked with: the same GUID, and the DBI stream's
    /// age equal to the image's (for a PDB without one, the PDB stream's age at least the
    /// image's), as debuggers match them.
    #[must_use]
    pub fn matches(&self, image: &CodeView) -> bool {
        self.guid == image.guid
            && match self.dbi_age {
                Some(age) => age == image.age,
                None => self.info_age >= image.age,
            }
    }

    /// The PDB's GUID, in the byte order of [`CodeView::guid`].
    #[must_use]
    pub fn guid(&self) -> [u8; 16] {
        self.guid
    }

    /// The age an image linked with this PDB records: the DBI stream's, or the PDB stream's
    /// for a PDB without one.
    #[must_use]
    pub fn age(&self) -> u32 {
        self.dbi_age.unwrap_or(self.info_age)
    }

    /// `(rva, name)` of every procedure, in the PDB's order.
    #[must_use]
    pub fn functions(&self) -> &[(u32, String)] {
        &self.functions
    }

    /// The procedures, as [`functions`](Self::functions) gives them.
    #[must_use]
    pub fn into_functions(self) -> Vec<(u32, String)> {
        self.functions
    }
}

fn read(bytes: &[u8]) -> core::result::Result<Pdb, pdb::Error> {
    let mut pdb = pdb::PDB::open(Cursor::new(bytes))?;
    let information = pdb.pdb_information()?;
    let (d1, d2, d3, d4) = information.guid.as_fields();
    let mut guid = [0; 16];
    guid[..4].copy_from_slice(&d1.to_le_bytes());
    guid[4..6].copy_from_slice(&d2.to_le_bytes());
    guid[6..8].copy_from_slice(&d3.to_le_bytes());
    guid[8..].copy_from_slice(d4);
    let address_map = pdb.address_map()?;
    let debug = pdb.debug_information()?;
    let mut functions = Vec::new();
    let mut modules = debug.modules()?;
    while let Some(module) = modules.next()? {
        let Some(info) = pdb.module_info(&module)? else {
            continue;
        };
        let mut symbols = info.symbols()?;
        while let Some(symbol) = symbols.next()? {
            if let Ok(pdb::SymbolData::Procedure(procedure)) = symbol.parse()
                && let Some(rva) = procedure.offset.to_rva(&address_map)
            {
                functions.push((rva.0, procedure.name.to_string().into_owned()));
            }
        }
    }
    Ok(Pdb {
        guid,
        dbi_age: debug.age(),
        info_age: information.age,
        functions,
    })
}
