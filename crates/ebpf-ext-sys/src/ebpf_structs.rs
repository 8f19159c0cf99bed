//! `ebpf_structs.h`: program, attach and link type numbers.

/// `bpf_prog_type_t`.
pub type bpf_prog_type_t = u32;
/// `BPF_PROG_TYPE_UNSPEC`.
pub const BPF_PROG_TYPE_UNSPEC: bpf_prog_type_t = 0;
/// `BPF_PROG_TYPE_XDP`.
pub const BPF_PROG_TYPE_XDP: bpf_prog_type_t = 1;
/// `BPF_PROG_TYPE_BIND`.
pub const BPF_PROG_TYPE_BIND: bpf_prog_type_t = 2;
/// `BPF_PROG_TYPE_CGROUP_SOCK_ADDR`.
pub const BPF_PROG_TYPE_CGROUP_SOCK_ADDR: bpf_prog_type_t = 3;
/// `BPF_PROG_TYPE_SOCK_OPS`.
pub const BPF_PROG_TYPE_SOCK_OPS: bpf_prog_type_t = 4;
/// `BPF_PROG_TYPE_NETEVENT`.
pub const BPF_PROG_TYPE_NETEVENT: bpf_prog_type_t = 5;
/// `BPF_PROG_TYPE_PROCESS`.
pub const BPF_PROG_TYPE_PROCESS: bpf_prog_type_t = 6;
/// `BPF_PROG_TYPE_SAMPLE`.
pub const BPF_PROG_TYPE_SAMPLE: bpf_prog_type_t = 999;

/// `bpf_attach_type_t` (C enum, 4 bytes).
pub type bpf_attach_type_t = i32;
/// `BPF_ATTACH_TYPE_UNSPEC`.
pub const BPF_ATTACH_TYPE_UNSPEC: bpf_attach_type_t = 0;
/// `BPF_XDP`.
pub const BPF_XDP: bpf_attach_type_t = 1;
/// `BPF_ATTACH_TYPE_BIND`.
pub const BPF_ATTACH_TYPE_BIND: bpf_attach_type_t = 2;
/// `BPF_CGROUP_INET4_CONNECT`.
pub const BPF_CGROUP_INET4_CONNECT: bpf_attach_type_t = 3;
/// `BPF_CGROUP_INET6_CONNECT`.
pub const BPF_CGROUP_INET6_CONNECT: bpf_attach_type_t = 4;
/// `BPF_CGROUP_INET4_RECV_ACCEPT`.
pub const BPF_CGROUP_INET4_RECV_ACCEPT: bpf_attach_type_t = 5;
/// `BPF_CGROUP_INET6_RECV_ACCEPT`.
pub const BPF_CGROUP_INET6_RECV_ACCEPT: bpf_attach_type_t = 6;
/// `BPF_CGROUP_SOCK_OPS`.
pub const BPF_CGROUP_SOCK_OPS: bpf_attach_type_t = 7;
/// `BPF_ATTACH_TYPE_SAMPLE`.
pub const BPF_ATTACH_TYPE_SAMPLE: bpf_attach_type_t = 8;
/// `BPF_ATTACH_TYPE_NETEVENT` (9 is unused).
pub const BPF_ATTACH_TYPE_NETEVENT: bpf_attach_type_t = 10;
/// `BPF_ATTACH_TYPE_PROCESS`.
pub const BPF_ATTACH_TYPE_PROCESS: bpf_attach_type_t = 11;
/// `BPF_CGROUP_INET4_CONNECT_AUTHORIZATION`.
pub const BPF_CGROUP_INET4_CONNECT_AUTHORIZATION: bpf_attach_type_t = 12;
/// `BPF_CGROUP_INET6_CONNECT_AUTHORIZATION`.
pub const BPF_CGROUP_INET6_CONNECT_AUTHORIZATION: bpf_attach_type_t = 13;
/// `BPF_CGROUP_INET4_BIND`.
pub const BPF_CGROUP_INET4_BIND: bpf_attach_type_t = 14;
/// `BPF_CGROUP_INET6_BIND`.
pub const BPF_CGROUP_INET6_BIND: bpf_attach_type_t = 15;
/// `BPF_CGROUP_INET4_LISTEN`.
pub const BPF_CGROUP_INET4_LISTEN: bpf_attach_type_t = 16;
/// `BPF_CGROUP_INET6_LISTEN`.
pub const BPF_CGROUP_INET6_LISTEN: bpf_attach_type_t = 17;

/// `enum bpf_link_type` (4 bytes).
pub type bpf_link_type = i32;
/// `BPF_LINK_TYPE_UNSPEC`.
pub const BPF_LINK_TYPE_UNSPEC: bpf_link_type = 0;
/// `BPF_LINK_TYPE_PLAIN`.
pub const BPF_LINK_TYPE_PLAIN: bpf_link_type = 1;
/// `BPF_LINK_TYPE_CGROUP`.
pub const BPF_LINK_TYPE_CGROUP: bpf_link_type = 2;
/// `BPF_LINK_TYPE_XDP`.
pub const BPF_LINK_TYPE_XDP: bpf_link_type = 3;
