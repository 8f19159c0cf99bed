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
OPS = 6  # Attach, Detach, Invoke, InvokeUntil, InvokeOnExpandedStack, Clients


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


# ---- program_info ----------------------------------------------------------------------------
# All zero bytes describe well-formed program data: current headers, a named type descriptor
# with a 16-byte context, no helpers, no address tables.
write("program_info", "well-formed-no-helpers", bytes(300))
