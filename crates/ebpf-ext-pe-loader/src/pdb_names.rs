//! Function names from an image's PDB (the procedures of its modules' debug information).

use std::path::Path;

use pdb::FallibleIterator;

/// `(rva, name)` of every procedure the PDB at `path` describes, or why it could not be read.
pub(crate) fn function_names(path: &Path) -> Result<Vec<(u32, String)>, pdb::Error> {
    let file = std::fs::File::open(path)?;
    let mut pdb = pdb::PDB::open(file)?;
    let address_map = pdb.address_map()?;
    let information = pdb.debug_information()?;
    let mut names = Vec::new();
    let mut modules = information.modules()?;
    while let Some(module) = modules.next()? {
        let Some(info) = pdb.module_info(&module)? else {
            continue;
        };
        let mut symbols = info.symbols()?;
        while let Some(symbol) = symbols.next()? {
            if let Ok(pdb::SymbolData::Procedure(procedure)) = symbol.parse()
                && let Some(rva) = procedure.offset.to_rva(&address_map)
            {
                names.push((rva.0, procedure.name.to_string().into_owned()));
            }
        }
    }
    Ok(names)
}
