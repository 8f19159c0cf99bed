"""Independent check of a driver image with pefile (PyPI), cross-checking cargo xtask's own.

Usage: pecheck.py IMAGE ENTRY_RVA [--integrity] [--allow-module MODULE]...
Prints one line per property and exits 1 if any fails. Imports may come from the kernel
modules the SDK uses and from each MODULE the driver declares.
"""
import sys

import pefile

ALLOWED = {"ntoskrnl.exe", "netio.sys", "hal.dll", "ksecdd.sys"}
W, X = 0x80000000, 0x20000000


def main():
    path, entry = sys.argv[1], int(sys.argv[2], 0)
    options = sys.argv[3:]
    integrity = "--integrity" in options
    allowed = set(ALLOWED)
    for i, option in enumerate(options):
        if option == "--allow-module" and i + 1 < len(options):
            allowed.add(options[i + 1].lower())
    pe = pefile.PE(path)
    opt = pe.OPTIONAL_HEADER
    results = [
        ("machine AMD64", pe.FILE_HEADER.Machine == 0x8664),
        ("subsystem NATIVE", opt.Subsystem == 1),
        ("entry point is DriverEntry", opt.AddressOfEntryPoint == entry),
        ("checksum correct", opt.CheckSum == pe.generate_checksum()),
    ]
    if integrity:
        results.append(("FORCE_INTEGRITY set", bool(opt.DllCharacteristics & 0x80)))
    for section in pe.sections:
        name = section.Name.rstrip(b"\0").decode(errors="replace")
        both = (section.Characteristics & W) and (section.Characteristics & X)
        results.append((f"section {name} not writable+executable", not both))
    modules = [e.dll.decode() for e in getattr(pe, "DIRECTORY_ENTRY_IMPORT", [])]
    for module in modules:
        results.append((f"import module {module} allowed", module.lower() in allowed))
    failed = False
    for what, ok in results:
        print(f"  pefile: {'ok  ' if ok else 'FAIL'} {what}")
        failed |= not ok
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
