#!/usr/bin/env python3
"""Writes the small seed inputs of each fuzz target into seeds/<target>/.

The fuzz targets decode their input with the `arbitrary` crate: integers little-endian in
field order, an enum variant as a u32 `x` choosing variant `(x * n) >> 32` of `n`, a bool as
bit 0 of a byte, a collection as elements each preceded by a "one more" byte (bit 0 set). The
seeds are well-formed scenarios the fuzzer mutates from; the targets work without them, only
more slowly. Run from anywhere: python3 fuzz/seeds/make_seeds.py
"""

import os
import struct

HERE = os.path.dirname(os.path.abspath(__file__))


def variant(index, count):
    """The u32 that selects variant `index` of `count`."""
    return struct.pack("<I", -(-(index << 32) // count))


def write(target, name, data):
    directory = os.path.join(HERE, target)
    os.makedirs(directory, exist_ok=True)
    with open(os.path.join(directory, name), "wb") as f:
        f.write(bytes(data))


# ---- hook_attach -----------------------------------------------------------------------------
# HookInput: kind, policy, wildcard (Presence + 24 bytes), max_clients, exclusive_wildcard,
# refuse_mask, unregister_first = 41 bytes; LinkInput: 100 bytes, all zero = a well-formed link
# (attach parameter: the empty byte vector, i.e. a wildcard attach).
OPS = 7  # Attach, Detach, Invoke, InvokeUntil, InvokeOnExpandedStack, Clients, Batch


def hook(kind=0, policy=0, max_clients=7):
    return (variant(kind, 5) + variant(policy, 4) + variant(0, 2) + bytes(24)
            + bytes([max_clients, 0]) + bytes(2) + bytes([0]))


def link(parameter=None):
    """A well-formed link; `parameter` (bytes) makes it attach with that parameter."""
    data = bytearray(100)
    if parameter is not None:
        # ClientData.data = Bytes { bytes, declared: Absent }: the bytes vector sits after
        # characteristics_version .. module (27 bytes), client_data presence (4), version (2),
        # size (4, Current), total_size (8), the AttachData variant (4).
        data = bytearray(27) + variant(0, 2) + bytes(2) + variant(0, 2) + bytes(8) + variant(0, 2)
        for byte in parameter:
            data += bytes([1, byte])
        data += bytes([0]) + variant(1, 2) + bytes(8)  # end of bytes; declared Absent; flags
        data += variant(0, 2) + bytes(2) + variant(0, 3) + variant(0, 2) * 4  # dispatch
        data += bytes(2) + variant(0, 2) + bytes(4)  # other_attach_type, decline, program
    return data


def ops(*items):
    out = bytearray()
    for item in items:
        out += b"\x01" + item
    return out


def attach(i):
    return variant(0, OPS) + bytes([i])


def detach(i):
    return variant(1, OPS) + bytes([i])


def invoke(parameter=b""):
    return variant(2, OPS) + parameter.ljust(24, b"\0")


def invoke_until(parameter=b"", stop_after=255, skip_mask=0):
    return variant(3, OPS) + parameter.ljust(24, b"\0") + bytes([stop_after, skip_mask])


def hook_seed(name, hook_bytes, links, script):
    data = bytearray(hook_bytes)
    for l in links:
        data += b"\x01" + l
    data += b"\x00" + ops(*script)
    write("hook_attach", name, data)


hook_seed("one-wildcard-link", hook(), [link()], [attach(0), invoke(), detach(0)])
hook_seed(
    "two-links-with-parameters-multi",
    hook(kind=0, policy=2),
    [link(b"\x07\0\0\0"), link()],
    [attach(0), attach(1), invoke(b"\x07"), invoke(b"\x08"), detach(0), invoke(b"\x07")],
)
hook_seed(
    "per-parameter-unregister-attached",
    hook(kind=0, policy=1)[:-1] + b"\x01",
    [link(b"\x01\0\0\0"), link(b"\x01\0\0\0"), link()],
    [attach(0), attach(1), attach(2), invoke(b"\x01")],
)

hook_seed(
    "per-parameter-wildcard-attached-first",
    hook(kind=0, policy=1),
    [link(), link(b"\x07\0\0\0")],
    [attach(0), attach(1), invoke_until(b"\x07"), invoke(b"\x07")],
)


# ---- map_attach ------------------------------------------------------------------------------
# ClientInput: no_client_data, version, size (Current | Any(u16)), total_size, map_context_offset,
# table (Option<Table>: version, size, total_size, seven NULL-slot flags); all zero but the
# option's byte is what the core presents.


def map_size(size=None):
    return variant(0, 2) if size is None else variant(1, 2) + struct.pack("<H", size)


def map_table(size=None, version=0, null_slots=(0,) * 7):
    return struct.pack("<H", version) + map_size(size) + bytes(8) + bytes(null_slots)


def map_client(table=map_table(), size=None, offset=48, no_client_data=0):
    body = bytes([no_client_data]) + struct.pack("<H", 0) + map_size(size) + bytes(8)
    body += struct.pack("<Q", offset)
    return body + (b"\x01" + table if table is not None else b"\x00")


def map_seed(name, clients, detach_order=b""):
    data = bytearray()
    for c in clients:
        data += b"\x01" + c
    data += b"\x00"
    for d in detach_order:
        data += b"\x01" + bytes([d])
    write("map_attach", name, data)


map_seed("what-the-core-presents", [map_client()])
map_seed(
    "accepted-and-refused-together",
    [map_client(), map_client(table=map_table(size=56)), map_client(table=None),
     map_client(table=map_table(size=32)), map_client(size=32)],
    b"\x01\x00",
)


# ---- program_info ----------------------------------------------------------------------------
# All zero bytes describe well-formed program data: current headers, a named type descriptor
# with a 16-byte context, no helpers, no address tables.
write("program_info", "well-formed-no-helpers", bytes(300))


# ---- sample_ioctl ----------------------------------------------------------------------------
# Input: caller (System), then steps. A request: code, version (XOR "SNX1"), interface_id,
# protocol or flags, iterations, data_len (Option), packet (Vec<u8>), input and output lengths.
def request(code, interface=0, iterations=0, flags=0):
    return (b"\x01" + variant(0, 3) + variant(code, 3) + bytes(4) + struct.pack("<I", interface)
            + struct.pack("<I", flags) + struct.pack("<Q", iterations) + bytes(1)
            + b"\x01\x45\x01\x00\x00" + variant(0, 2) + variant(0, 2))


write("sample_ioctl", "run-wildcard", variant(0, 3) + request(0))
write("sample_ioctl", "run-interface-7-and-9", variant(0, 3) + request(0, 7) + request(0, 9))
write("sample_ioctl", "profile-at-dispatch", variant(0, 3) + request(1, 7, iterations=3, flags=1))


# ---- sample_ext_ioctl ------------------------------------------------------------------------
# Input: caller (System), then steps (Request, Attach, Detach). A request: code (Run, Batch,
# Other), version (XOR "SEXT"), attach parameter (u8), uint32_data or count, data_len (Option),
# data (Vec<u8>), input and output lengths. An attach: parameter (Option<u8>), result
# (Option<u32>).
def ext_request(code, parameter=0, value=0):
    return (b"\x01" + variant(0, 3) + variant(code, 3) + bytes(4) + bytes([parameter])
            + struct.pack("<I", value) + bytes(1) + b"\x01\x45\x01\x00\x01\x07\x00"
            + variant(0, 2) + variant(0, 2))


def ext_attach(parameter, result):
    encoded = b"\x01" + variant(1, 3)
    encoded += b"\x00" if parameter is None else b"\x01" + bytes([parameter])
    return encoded + b"\x01" + struct.pack("<I", result)


write("sample_ext_ioctl", "run-and-batch-wildcard",
      variant(0, 3) + ext_attach(None, 7) + ext_request(0, 0, 5) + ext_request(1, 0, 3))
write("sample_ext_ioctl", "specific-before-wildcard",
      variant(0, 3) + ext_attach(None, 7) + ext_attach(1, 5) + ext_request(0, 1, 5)
      + ext_request(1, 1, 4) + ext_request(0, 2, 5))


# ---- sample_process --------------------------------------------------------------------------
# Input: steps (Attach(Outcome), Detach(u8), Create { process, parent, command_line }, Exit(u8)).
# An outcome: Allow(u16), Deny(u16), Fail.
def outcome(kind, n=0):
    return variant(kind, 3) + (struct.pack("<H", n) if kind < 2 else b"")


def process_step(kind, body):
    return b"\x01" + variant(kind, 4) + body


def create(process, parent, command=None):
    encoded = bytes([process, parent])
    if command is None:
        return process_step(2, encoded + b"\x00")
    chars = b"".join(b"\x01" + bytes([c - 0x20]) for c in command)
    return process_step(2, encoded + b"\x01" + chars + b"\x00")


write("sample_process", "allow-deny-fail-then-exit",
      process_step(0, outcome(2)) + process_step(0, outcome(0, 5)) + process_step(0, outcome(1, 0x22))
      + create(1, 4, b"p.exe --x") + process_step(1, bytes([2])) + create(2, 4) + process_step(3, bytes([0])))


# ---- test_run --------------------------------------------------------------------------------
# Input: runs. A run: extension (Sample, Process), context and data (Buffer: Bytes(Vec<u8>) or
# Null(u16)), strings (Option<[(u16, i8); 4]>), data_out and context_out capacities (Same,
# More(u8), Any(u16)), failing_allocation (Option<u8>).
def byte_vec(data):
    return b"".join(b"\x01" + bytes([b]) for b in data) + b"\x00"


def test_run(extension, context, data, strings=None):
    encoded = variant(extension, 2) + variant(0, 2) + byte_vec(context) + variant(0, 2) + byte_vec(data)
    if strings is None:
        encoded += b"\x00"
    else:
        encoded += b"\x01" + b"".join(struct.pack("<Hb", length, offset) for length, offset in strings)
    # Capacities as needed, no failing allocation.
    return b"\x01" + encoded + variant(0, 3) + variant(0, 3) + b"\x00"


# sample_program_context_t (ctx_in carries no header for it): data pointers, uint32_data,
# uint16_data, reserved, helper_data_1 and 2.
SAMPLE_CONTEXT = bytes(16) + struct.pack("<IHHII", 7, 3, 0, 1, 2)
# process_notify_context_t, the 64-byte header included: 296 bytes, a creation (operation 0),
# four 4-byte strings.
PROCESS_CONTEXT = bytes(296)
write("test_run", "sample-copy", test_run(0, SAMPLE_CONTEXT, b"hello, sample"))
write("test_run", "process-four-strings",
      test_run(1, PROCESS_CONTEXT, "c.exet.exenamedom".encode("utf-16-le")[:32], [(8, 2)] * 4))
write("test_run", "both", test_run(0, SAMPLE_CONTEXT, b"") + test_run(1, PROCESS_CONTEXT, b""))


# ---- pe_parse --------------------------------------------------------------------------------
# A minimal driver image as the loader accepts it: PE32+, AMD64, native subsystem, .text
# (entry point, one absolute address), .data, .rdata (an import of ntoskrnl.exe!KeBugCheckEx)
# and .reloc (one DIR64). `imports=False` leaves the import directory out; `exports=True`
# adds an export directory in .rdata (`DriverEntry`, the entry point, by name and ordinal 1).
def pe(imports=True, exports=False):
    sections = [  # name, rva, virtual size, file offset, characteristics
        (b".text", 0x1000, 0x20, 0x400, 0x60000020),
        (b".data", 0x2000, 0x20, 0x600, 0xC0000040),
        (b".rdata", 0x3000, 0x110, 0x800, 0x40000040),
        (b".reloc", 0x4000, 12, 0xA00, 0x42000040),
    ]
    size_of_image, size_of_headers, file_size = 0x5000, 0x400, 0xC00
    image = bytearray(file_size)
    image[0:2] = b"MZ"
    image[0x3C:0x40] = struct.pack("<I", 0x40)
    image[0x40:0x44] = b"PE\0\0"
    image[0x44:0x58] = struct.pack("<HHIIIHH", 0x8664, len(sections), 0, 0, 0, 240, 0x22)
    opt = bytearray(240)
    struct.pack_into("<HBBIIIII", opt, 0, 0x20B, 14, 0, 0x200, 0x400, 0, 0x1000, 0x1000)
    struct.pack_into("<QII", opt, 24, 0x1_4000_0000, 0x1000, 0x200)
    struct.pack_into("<HHHHHHI", opt, 40, 10, 0, 0, 0, 10, 0, 0)
    struct.pack_into("<IIIHH", opt, 56, size_of_image, size_of_headers, 0, 1, 0x0160)
    struct.pack_into("<QQQQII", opt, 72, 0x40000, 0x1000, 0x100000, 0x1000, 0, 16)
    if exports:
        struct.pack_into("<II", opt, 112 + 8 * 0, 0x30C0, 0x50)  # export directory
    if imports:
        struct.pack_into("<II", opt, 112 + 8 * 1, 0x3000, 40)  # import directory
    struct.pack_into("<II", opt, 112 + 8 * 5, 0x4000, 12)  # base relocations
    image[0x58:0x58 + 240] = opt
    for i, (name, rva, vsize, offset, characteristics) in enumerate(sections):
        struct.pack_into("<8sIIIIIIHHI", image, 0x148 + 40 * i, name, vsize, rva, 0x200, offset,
                         0, 0, 0, 0, characteristics)
    text, rdata, reloc = 0x400, 0x800, 0xA00
    image[text] = 0xC3  # ret
    struct.pack_into("<Q", image, text + 0x10, 0x1_4000_1000)  # an absolute address
    struct.pack_into("<IIIII", image, rdata, 0x3040, 0, 0, 0x3080, 0x3060)  # descriptor
    struct.pack_into("<Q", image, rdata + 0x40, 0x30A0)  # lookup table
    struct.pack_into("<Q", image, rdata + 0x60, 0x30A0)  # address table
    image[rdata + 0x80:rdata + 0x8D] = b"ntoskrnl.exe\0"
    image[rdata + 0xA2:rdata + 0xAF] = b"KeBugCheckEx\0"
    struct.pack_into("<IIHH", image, reloc, 0x1000, 12, (10 << 12) | 0x10, 0)
    if exports:
        # Directory at 0x30C0: name, base 1, one function, one name, then the three tables.
        struct.pack_into("<IIHHIIIIIII", image, rdata + 0xC0, 0, 0, 0, 0, 0x3100, 1, 1, 1,
                         0x30E8, 0x30EC, 0x30F0)
        struct.pack_into("<I", image, rdata + 0xE8, 0x1000)  # DriverEntry's RVA
        struct.pack_into("<I", image, rdata + 0xEC, 0x30F4)  # its name's RVA
        struct.pack_into("<H", image, rdata + 0xF0, 0)  # its index in the address table
        image[rdata + 0xF4:rdata + 0x100] = b"DriverEntry\0"
        image[rdata + 0x100:rdata + 0x109] = b"seed.sys\0"
    return image


write("pe_parse", "driver-with-import", pe())
write("pe_parse", "driver-without-imports", pe(imports=False))
write("pe_parse", "driver-with-exports", pe(exports=True))


# ---- btf_externs -----------------------------------------------------------------------------
# Raw `.BTF` contents: header, types (12-byte records and their data), strings.

def btf(types):
    """BTF over `types`: (kind, vlen, size_or_type, name, data) each."""
    strings = bytearray(b"\0")
    body = bytearray()
    for kind, vlen, size_or_type, name, data in types:
        name_off = 0
        if name:
            name_off = len(strings)
            strings += name.encode() + b"\0"
        body += struct.pack("<III", name_off, (kind << 24) | vlen, size_or_type) + data
    header = struct.pack("<HBBIIIII", 0xEB9F, 1, 0, 24, 0, len(body), len(body), len(strings))
    return header + body + strings


MODULE_TAG = "module_id:{8f6c1f83-ce4c-4b58-8b91-654a29e23b7c}"
MINUS_ONE = struct.pack("<i", -1)
write("btf_externs", "extern-with-module", btf([
    (1, 0, 8, "unsigned long long", struct.pack("<I", 64)),
    (13, 1, 1, "", struct.pack("<II", 0, 1)),
    (12, 2, 2, "sample_ebpf_extension_btf_lookup", b""),
    (17, 0, 3, MODULE_TAG, MINUS_ONE),
    (15, 1, 0, ".ksyms", struct.pack("<III", 3, 0, 0)),
]))
write("btf_externs", "every-kind", btf([
    (1, 0, 4, "int", struct.pack("<I", 32)),
    (2, 0, 1, "", b""),
    (3, 0, 0, "", struct.pack("<III", 1, 1, 4)),
    (4, 1, 4, "s", struct.pack("<III", 0, 1, 0)),
    (5, 1, 4, "u", struct.pack("<III", 0, 1, 0)),
    (6, 1, 4, "e", struct.pack("<Ii", 0, 1)),
    (7, 0, 0, "fwd", b""),
    (8, 0, 1, "t", b""),
    (9, 0, 1, "", b""),
    (10, 0, 1, "", b""),
    (11, 0, 1, "", b""),
    (13, 0, 1, "", b""),
    (12, 2, 12, "f", b""),
    (14, 0, 1, "v", struct.pack("<I", 1)),
    (16, 0, 8, "double", b""),
    (17, 0, 13, MODULE_TAG, MINUS_ONE),
    (18, 0, 1, "tag", b""),
    (19, 1, 8, "e64", struct.pack("<III", 0, 1, 0)),
]))


# ---- bpf_interpret ---------------------------------------------------------------------------
# The buffer's 64 bytes, then instructions (opcode, dst | src << 4, off, imm).
def insn(code, dst=0, src=0, off=0, imm=0):
    return struct.pack("<BBhi", code, dst | (src << 4), off, imm)


MEMORY = bytes(range(64))
EXIT = insn(0x95)
write("bpf_interpret", "load-store", MEMORY
      + insn(0x79, 2, 1, 8)            # r2 = *(u64 *)(r1 + 8)
      + insn(0x07, 2, 0, 0, 1)         # r2 += 1
      + insn(0x7b, 1, 2, 16)           # *(u64 *)(r1 + 16) = r2
      + insn(0x91, 0, 1, 3)            # r0 = *(s8 *)(r1 + 3)
      + EXIT)
write("bpf_interpret", "local-call", MEMORY
      + insn(0xb7, 6, 0, 0, 6)         # r6 = 6
      + insn(0x85, 0, 1, 0, 2)         # call local +2
      + insn(0x0f, 0, 6)               # r0 += r6
      + EXIT
      + insn(0x7a, 10, 0, -8, 7)       # *(u64 *)(r10 - 8) = 7
      + insn(0x79, 0, 10, -8)          # r0 = *(u64 *)(r10 - 8)
      + EXIT)
write("bpf_interpret", "atomics", MEMORY
      + insn(0xb7, 2, 0, 0, 5)         # r2 = 5
      + insn(0xdb, 1, 2, 0, 0x01)      # r2 = atomic_fetch_add((u64 *)r1, r2)
      + insn(0xb7, 0, 0, 0, 0)         # r0 = 0
      + insn(0xc3, 1, 2, 8, 0xf1)      # r0 = cmpxchg((u32 *)(r1 + 8), r0, r2)
      + EXIT)
write("bpf_interpret", "loop-and-helper", MEMORY
      + insn(0xb7, 0, 0, 0, 0)         # r0 = 0
      + insn(0x07, 0, 0, 0, 1)         # r0 += 1
      + insn(0xa5, 0, 0, -2, 100)      # if r0 < 100 goto -2
      + insn(0xbf, 1, 0)               # r1 = r0
      + insn(0x85, 0, 0, 0, 7)         # call helper 7
      + insn(0x3f, 0, 1, 1)            # r0 s/= r1
      + insn(0xd7, 0, 0, 0, 64)        # r0 = bswap64(r0)
      + EXIT)
